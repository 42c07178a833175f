"""The toy world on disk: instances in the VBVR layout (<split>/ball_to_target_data-generator/NNNNN/ with
first_frame.png, prompt.txt, final_frame.png, ground_truth.mp4, metadata.json), videos, and the scoring of a
folder of videos laid out like tto-bench's output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import world as W

def read_video(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def write_video(path, frames: np.ndarray, fps: int = W.FPS) -> Path:
    """H.264 / yuv420p, as ComfyUI's SaveVideo writes (so ground truth meets the same compression)."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format="yuv420p")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def task_folder(out, split: str, index: int) -> Path:
    return Path(out) / split / W.TASK_NAME / f"{index:05d}"


def write_instance(folder, instance: W.Instance) -> Path:
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video = W.render_video(instance)
    Image.fromarray(video[0]).save(folder / "first_frame.png")
    Image.fromarray(video[-1]).save(folder / "final_frame.png")
    (folder / "prompt.txt").write_text(instance.instruction + "\n")
    (folder / "metadata.json").write_text(json.dumps(instance.metadata(), indent=1) + "\n")
    write_video(folder / "ground_truth.mp4", video)
    return folder


def write_instances(out, n: int, seed: int, split: str, start: int = 0) -> list[Path]:
    """Instances start..start+n-1 of stream `seed` under <out>/<split>/ball_to_target_data-generator/NNNNN/."""
    if n < 1:
        raise ValueError("--n must be at least 1.")
    if not split or "/" in split or split in (".", ".."):
        raise ValueError(f"--split must be a plain folder name, got {split!r}.")
    return [write_instance(task_folder(out, split, i), W.generate_instance(seed, i)) for i in range(start, start + n)]


def load_instance(task_dir) -> W.Instance:
    path = Path(task_dir) / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"No metadata.json in {task_dir}: is this a toy-world task folder?")
    return W.Instance.from_metadata(json.loads(path.read_text()))


def score_folder(videos, tasks) -> dict:
    """Score every task under `tasks` against `<videos>/<split>/<task>/NNNNN.mp4` (tto-bench's layout).

    A task without a video counts as a failure of every rule ("missing"). Returns the summary dict.
    """
    videos, tasks = Path(videos), Path(tasks)
    pairs = task_videos(videos, tasks)
    if not pairs:
        raise FileNotFoundError(f"No toy-world tasks (<split>/{W.TASK_NAME}/NNNNN/metadata.json) under {tasks}.")
    per_task, verdicts, missing = {}, [], 0
    for task_id, d, video in pairs:
        if not video.is_file():
            missing += 1
            per_task[task_id] = {"success": False, "missing": True}
            continue
        verdict = W.check_video(read_video(video), load_instance(d))
        verdicts.append(verdict)
        per_task[task_id] = verdict.to_dict()
    failures = {**W.tally(verdicts)["failures"], "missing": missing}
    n = len(per_task)
    k = sum(v["success"] for v in per_task.values())
    lo, hi = W.wilson_interval(k, n)
    return {"videos": str(videos), "tasks": str(tasks), "n": n, "successes": k, "success_rate": k / n,
            "wilson95": [lo, hi], "failures": failures, "per_task": per_task}


def format_summary(summary: dict) -> str:
    lo, hi = summary["wilson95"]
    fails = ", ".join(f"{k} {v}" for k, v in summary["failures"].items())
    return (f"{summary['successes']}/{summary['n']} succeed: {100 * summary['success_rate']:.1f}% "
            f"(95% Wilson {100 * lo:.1f}-{100 * hi:.1f}%); failures per rule: {fails}")


def task_videos(videos, tasks) -> list[tuple[str, Path, Path]]:
    """(task id, task folder, video path) for every task under `tasks`, the video where tto-bench writes it
    under `videos` (<split>/<task>/NNNNN.mp4), whether or not it is there."""
    tasks = Path(tasks)
    return [(task_id, d, Path(videos) / f"{task_id}.mp4")
            for d in iter_task_dirs(tasks) for task_id in [d.relative_to(tasks).as_posix()]]


def iter_task_dirs(tasks) -> list[Path]:
    """Every toy task folder (<split>/ball_to_target_data-generator/NNNNN/ with metadata.json) under `tasks`."""
    return sorted(p.parent for p in Path(tasks).rglob("metadata.json") if p.parent.parent.name == W.TASK_NAME)
