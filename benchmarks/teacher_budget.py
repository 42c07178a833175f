"""The teacher's pixel budget: how far its verdicts move from its full-resolution ones, against its cost.

    python benchmarks/teacher_budget.py --teacher models/LLM/Qwen3-VL-4B-Instruct --videos DIR \
        --queries queries.json [--budgets 0,6291456,786432] [--frames 24] [--fps 24] [--json OUT]

For every video (`*.mp4` under DIR) the teacher grades the same K frames at each budget (0: the
checkpoint's own) with the queries of `--queries` (a JSON list of {"text", "kind", "weight", "answer"},
as TeacherAnalyze writes them). For each budget it reports the frame size the teacher reads, its video
tokens, its FLOPs per grading (FlopCounterMode, on the run itself), and against the checkpoint's own budget:
how often a query's verdict (score above 0.5) is the same, and the mean change in score. The grading is
`tto_engine.grade_frames`, the loop's own. Only a trained teacher makes the agreement mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tto_engine import Query, VLMTeacher, frame_times, grade_frames, sample_frame_indices  # noqa: E402

OWN_BUDGET = 0


def read_frames(path) -> torch.Tensor:
    """An mp4 as frames [F, 3, H, W] in [0, 1]."""
    import av

    with av.open(str(path)) as container:
        frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path} holds no video frames.")
    return torch.stack(frames).movedim(-1, 1).float() / 255.0


def grade_at(teacher: VLMTeacher, budget: int, frames, times, queries) -> dict:
    """Grade once with the teacher reading at most `budget` pixels (0: the checkpoint's own)."""
    kept = teacher.max_video_pixels
    teacher.max_video_pixels = budget
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            grade = grade_frames(teacher, frames, times, queries, goal_weight=0.5)
        gt, gh, gw = (int(v) for v in teacher.preprocess_video(frames)[1][0])
    finally:
        teacher.max_video_pixels = kept
    patch = teacher.spec.patch_size
    return {"scores": [float(s) for s in grade.scores], "frame_size": [gh * patch, gw * patch],
            "video_tokens": gt * gh * gw // teacher.spec.merge_size ** 2, "flops": counter.get_total_flops()}


def compare_budgets(teacher: VLMTeacher, videos: dict[str, torch.Tensor], queries: list[Query],
                    budgets: list[int], k: int, fps: float) -> dict:
    """Per budget: agreement with the checkpoint's own budget over every (video, query), and the cost."""
    budgets = [OWN_BUDGET] + [b for b in budgets if b != OWN_BUDGET]
    runs = {b: [] for b in budgets}
    for video in videos.values():
        indices = sample_frame_indices(video.shape[0], k)
        frames, times = video[indices], frame_times(indices, fps)
        for b in budgets:
            runs[b].append(grade_at(teacher, b, frames, times, queries))
    reference = [s for run in runs[OWN_BUDGET] for s in run["scores"]]
    table = {}
    for b, graded in runs.items():
        scores = [s for run in graded for s in run["scores"]]
        same = [(a > 0.5) == (r > 0.5) for a, r in zip(scores, reference)]
        table[str(b)] = {"budget": b or "checkpoint's own", "frame_size": graded[0]["frame_size"],
                         "video_tokens": graded[0]["video_tokens"],
                         "flops_per_grading": sum(g["flops"] for g in graded) / len(graded),
                         "verdict_agreement": sum(same) / len(same),
                         "mean_score_change": sum(abs(a - r) for a, r in zip(scores, reference)) / len(scores)}
    own_flops = table[str(OWN_BUDGET)]["flops_per_grading"]
    for row in table.values():
        row["flops_vs_own"] = row["flops_per_grading"] / own_flops
    return {"videos": len(videos), "queries": len(queries), "frames": k, "budgets": table}


def format_table(result: dict) -> str:
    rows = ["| budget (px) | frames read at | video tokens | FLOPs / grading | vs own | verdicts agreeing | "
            "mean score change |", "|---|---|---|---|---|---|---|"]
    for r in result["budgets"].values():
        rows.append(f"| {r['budget']} | {r['frame_size'][0]}x{r['frame_size'][1]} | {r['video_tokens']:,} | "
                    f"{r['flops_per_grading']:.3g} | {r['flops_vs_own']:.2f} | {r['verdict_agreement']:.1%} | "
                    f"{r['mean_score_change']:.3f} |")
    return "\n".join(rows)


def load_queries(path) -> list[Query]:
    items = json.loads(Path(path).read_text())
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty JSON list of queries.")
    return [Query.from_dict(q) for q in items]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="a local Qwen3-VL / Qwen2.5-VL checkpoint folder")
    parser.add_argument("--videos", required=True, help="a folder searched for *.mp4")
    parser.add_argument("--queries", required=True, help="JSON list of {text, kind, answer}")
    parser.add_argument("--budgets", default="0,6291456,786432", help="comma-separated pixel budgets")
    parser.add_argument("--frames", type=int, default=24, help="K, frames graded per video")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    paths = sorted(Path(args.videos).rglob("*.mp4"))
    if not paths:
        parser.error(f"no .mp4 file under {args.videos}")
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    teacher = VLMTeacher.from_pretrained(args.teacher, dtype=dtype, device=args.device, gradient_checkpointing=False)
    videos = {str(p.relative_to(args.videos)): read_frames(p).to(args.device, dtype) for p in paths}
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    result = compare_budgets(teacher, videos, load_queries(args.queries), budgets, args.frames, args.fps)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(["python", "benchmarks/teacher_budget.py"]
                                                                   + (argv or sys.argv[1:])), **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
