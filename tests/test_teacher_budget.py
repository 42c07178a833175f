"""benchmarks/teacher_budget.py: the teacher's verdicts at smaller pixel budgets against its own, and the cost."""

import json
import sys
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.teacher_budget import compare_budgets, main, read_frames  # noqa: E402
from tto_engine import Query, VLMTeacher  # noqa: E402

QUERIES = [Query("Does the yellow ball reach the red square?", "goal"),
           Query("Does the ball avoid the black marks?", kind="process")]


def write_mp4(path, frames: np.ndarray) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def test_the_own_budget_agrees_with_itself_and_smaller_budgets_cost_less(tiny_teacher_dir):
    teacher = VLMTeacher.from_pretrained(tiny_teacher_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    videos = {f"v{i}": torch.rand(9, 3, 64, 64, generator=g) for i in range(2)}
    kept = teacher.max_video_pixels
    result = compare_budgets(teacher, videos, QUERIES, [16 * 1024, 1 << 20], k=8, fps=8.0)
    assert teacher.max_video_pixels == kept  # the teacher is handed back with its own budget
    own, low, high = (result["budgets"][b] for b in ("0", str(16 * 1024), str(1 << 20)))
    assert own["verdict_agreement"] == 1.0 and own["mean_score_change"] == 0.0 and own["flops_vs_own"] == 1.0
    assert own["frame_size"] == [64, 64]  # 8 x 64 x 64 px fit the tiny checkpoint's own budget (65,536 px)
    assert low["frame_size"] == [32, 32] and own["video_tokens"] == 4 * low["video_tokens"]
    assert 0.0 < low["flops_vs_own"] < 1.0 and 0.0 <= low["verdict_agreement"] <= 1.0
    # A budget above the checkpoint's own changes nothing: the same reading, the same verdicts.
    assert high["frame_size"] == [64, 64] and high["verdict_agreement"] == 1.0 and high["mean_score_change"] == 0.0
    assert result["videos"] == 2 and result["queries"] == 2


def test_the_command_reads_videos_and_writes_its_figures(tiny_teacher_dir, tmp_path):
    frames = (np.random.default_rng(0).random((9, 64, 64, 3)) * 255).astype(np.uint8)
    (tmp_path / "videos" / "task").mkdir(parents=True)
    write_mp4(tmp_path / "videos" / "task" / "00000.mp4", frames)
    assert read_frames(tmp_path / "videos" / "task" / "00000.mp4").shape == (9, 3, 64, 64)
    (tmp_path / "q.json").write_text(json.dumps([{"text": q.text, "kind": q.kind} for q in QUERIES]))
    out = tmp_path / "out.json"
    assert main(["--teacher", str(tiny_teacher_dir), "--videos", str(tmp_path / "videos"), "--queries",
                 str(tmp_path / "q.json"), "--budgets", "0,8192", "--frames", "8", "--device", "cpu",
                 "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["videos"] == 1 and set(written["budgets"]) == {"0", "8192"}
    assert written["command"].startswith("python benchmarks/teacher_budget.py --teacher")
