"""The toy world's results table: every method's videos scored by the checker, from tto-bench output folders.

    python benchmarks/toy_results.py --tasks TASKS --out OUT [--json FILE]

OUT holds one folder per method as `tto-bench --out OUT --method M` writes it (summary.json and the videos).
Prints a markdown table: success with a 95% Wilson interval and the rules that failed, seconds per task, the
loop's iterations and stop reasons, Best-of-N's N, and the failure analysis of the loop: for each video the
checker fails, whether the teacher believed it good (the loop stopped at its loss threshold: fooled) or never
got there (it ran out of iterations: not converged).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tto_models.toy import files, world  # noqa: E402

METHODS = ("baseline", "solver", "best_of_n", "tto")


def method_row(folder: Path, tasks: Path) -> dict | None:
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    scores = files.score_folder(folder, tasks)
    records = {r["task"]: r for r in summary["tasks"] if r.get("status") == "done"}
    seconds = [r["seconds"] for r in records.values() if r.get("seconds") is not None]
    row = {"method": summary["method"], "n": scores["n"], "successes": scores["successes"],
           "wilson95": world.wilson_interval(scores["successes"], scores["n"]), "failures": scores["failures"],
           "seconds_mean": statistics.mean(seconds) if seconds else None,
           "seconds_max": max(seconds) if seconds else None, "settings": summary.get("settings"),
           "goal_failures_by_square": goal_failures_by_square(folder, tasks)}
    if summary["method"] == "tto":
        row["iterations_mean"] = statistics.mean(r["iterations"] for r in records.values() if r.get("iterations"))
        row["stop_reasons"] = dict(Counter(r.get("stop_reason") for r in records.values()))
        walls = [r["cost"].get("equal_wall_samples") for r in records.values() if r.get("cost")]
        walls = [w for w in walls if w]
        row["equal_wall_samples_mean"] = statistics.mean(walls) if walls else None
        analysis = Counter()
        for task, verdict in scores["per_task"].items():
            if verdict.get("success"):
                continue
            stop = records.get(task, {}).get("stop_reason")
            analysis["fooled" if stop == "threshold" else "not converged" if stop == "max_iterations"
                     else str(stop)] += 1
        row["failure_analysis"] = dict(analysis)
    if summary["method"] == "best_of_n":
        row["n_samples"] = sorted({len(r.get("candidates") or []) for r in records.values()})
    return row


SQUARE_MOVED_PX = 5.0     # the last frame's square centre this far from the first frame's: the video moved it
AT_SQUARE_PX = 8.0        # the ball's final centroid this close to where the video drew the square


def scored_videos(folder: Path, tasks: Path):
    """(instance, video, checker verdict) for each task whose video `folder` holds."""
    for _, task_dir, video_path in files.task_videos(folder, tasks):
        if video_path.is_file():
            instance, video = files.load_instance(task_dir), files.read_video(video_path)
            yield instance, video, world.check_video(video, instance)


def goal_failures_by_square(folder: Path, tasks: Path) -> dict:
    """Of the videos that fail the goal rule: in how many the square was drawn elsewhere in the last frame, and
    in how many of those the ball sits on the moved square (a "Yes" to the goal question that the checker,
    judging against the first frame's square, rejects)."""
    out = {"goal_failures": 0, "square_moved": 0, "ball_at_moved_square": 0}
    for instance, video, verdict in scored_videos(folder, tasks):
        red = world.square_pixels(world.resize_nearest(video[-1:])[0])
        if verdict.goal or not red.any():
            continue
        out["goal_failures"] += 1
        ys, xs = np.nonzero(red)
        drawn = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
        if np.hypot(*(drawn - np.asarray(instance.target_centre))) > SQUARE_MOVED_PX:
            out["square_moved"] += 1
            if verdict.final_centroid and np.hypot(*(np.asarray(verdict.final_centroid) - drawn)) < AT_SQUARE_PX:
                out["ball_at_moved_square"] += 1
    return out


def teacher_accuracy(folder: Path, tasks: Path, teacher_dir: Path) -> dict:
    """The teacher's yes/no answers on one method's videos (generated, never trained on) against the
    checker's verdicts, per question: accuracy and the share of "yes" verdicts."""
    from tto_models.toy import teacher as T

    examples = [T.Example(video, instance, folder.name, verdict)
                for instance, video, verdict in scored_videos(folder, tasks)]
    return T.evaluate(T.load(teacher_dir), examples)[folder.name]


def markdown(rows: list[dict]) -> str:
    lines = ["| method | success | 95% Wilson | failed rules (goal / obstacles / size) | s per task (mean, max) | notes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        f = r["failures"]
        notes = []
        if "iterations_mean" in r:
            notes.append(f"iterations {r['iterations_mean']:.1f} mean; stops {r['stop_reasons']}; "
                         f"equal-wall samples {r['equal_wall_samples_mean']:.1f} mean; "
                         f"failures {r['failure_analysis']}")
        if "n_samples" in r:
            notes.append(f"N = {r['n_samples']}")
        sq = r["goal_failures_by_square"]
        notes.append(f"goal failures with the square moved {sq['square_moved']}, ball on it {sq['ball_at_moved_square']}")
        lo, hi = r["wilson95"]
        secs = "-" if r["seconds_mean"] is None else f"{r['seconds_mean']:.1f}, {r['seconds_max']:.1f}"
        lines.append(f"| {r['method']} | {r['successes']}/{r['n']} ({100 * r['successes'] / r['n']:.0f}%) | "
                     f"{100 * lo:.0f}-{100 * hi:.0f}% | {f['goal']} / {f['obstacles']} / {f['size']} | "
                     f"{secs} | {'; '.join(notes)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", required=True, help="the tasks folder the videos were made from")
    p.add_argument("--out", required=True, help="tto-bench's --out, one folder per method")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--teacher", help="a toy teacher folder: also its accuracy on the baseline's videos")
    args = p.parse_args(argv)
    rows = [r for m in METHODS if (r := method_row(Path(args.out) / m, Path(args.tasks))) is not None]
    if not rows:
        print(f"no method folders with summary.json under {args.out}", file=sys.stderr)
        return 2
    print(markdown(rows))
    if args.teacher:
        accuracy = teacher_accuracy(Path(args.out) / "baseline", Path(args.tasks), Path(args.teacher))
        print("\nteacher on the baseline's videos (accuracy, share of yes verdicts):", json.dumps(accuracy))
        rows.append({"teacher_on_baseline_videos": accuracy})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
