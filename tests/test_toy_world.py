"""The toy world's generator and checker: determinism, the layout rules, and verdicts on known videos."""

import json
import math
import shutil

import numpy as np
import pytest

from tto_models.toy import files as F
from tto_models.toy import world as W
from tto_models.toy.__main__ import main as toy_cli


@pytest.fixture(scope="module")
def instances():
    return [W.generate_instance(3, i) for i in range(150)]


def path_length(waypoints):
    return float(np.linalg.norm(np.diff(np.asarray(waypoints), axis=0), axis=1).sum())


def arc_length(waypoints, points):
    """Arc length along the polyline at each point (each lies on it)."""
    out = []
    for p in points:
        walked = 0.0
        for a, b in zip(np.asarray(waypoints[:-1]), np.asarray(waypoints[1:])):
            seg = np.linalg.norm(b - a)
            if abs(np.linalg.norm(p - a) + np.linalg.norm(b - p) - seg) < 1e-6:
                out.append(walked + np.linalg.norm(p - a))
                break
            walked += seg
    assert len(out) == len(points)
    return np.asarray(out)


def detour_instance(instances):
    return next(i for i in instances if len(i.waypoints) == 3)


def test_generation_is_deterministic_and_independent_of_batch(tmp_path):
    a = W.generate_instance(11, 5)
    assert a == W.generate_instance(11, 5)
    assert a != W.generate_instance(12, 5) and a != W.generate_instance(11, 6)
    F.write_instances(tmp_path / "x", 3, seed=11, split="s", start=4)
    F.write_instances(tmp_path / "y", 8, seed=11, split="s")
    for name in ("first_frame.png", "final_frame.png", "prompt.txt", "metadata.json", "ground_truth.mp4"):
        left = (F.task_folder(tmp_path / "x", "s", 5) / name).read_bytes()
        assert left == (F.task_folder(tmp_path / "y", "s", 5) / name).read_bytes(), name
    meta = json.loads((F.task_folder(tmp_path / "y", "s", 5) / "metadata.json").read_text())
    assert W.Instance.from_metadata(meta) == a


def test_first_frame_layout_rules(instances):
    counts = {0: 0, 1: 0, 2: 0}
    for ins in instances:
        counts[len(ins.obstacles)] += 1
        masks = [W.disc_mask(ins.ball)]
        target = np.zeros((W.SIZE, W.SIZE), bool)
        target[ins.target[1]:ins.target[1] + 16, ins.target[0]:ins.target[0] + 16] = True
        masks.append(target)
        masks += [W.x_mark_mask(o) for o in ins.obstacles]
        assert sum(m.astype(int) for m in masks).max() == 1  # no overlap
        boxes = W._boxes(ins.ball, ins.target, ins.obstacles)
        for i in range(len(boxes)):
            assert all(b >= W.BORDER for b in boxes[i][:2]) and all(b <= W.SIZE - W.BORDER for b in boxes[i][2:])
            for j in range(i + 1, len(boxes)):
                assert W._box_gap(boxes[i], boxes[j]) >= 6
        tc = ins.target_centre
        assert abs(ins.ball[0] - tc[0]) + abs(ins.ball[1] - tc[1]) >= 40
        assert ins.instruction == ("Move the yellow ball to the red square."
                                   + (" Do not touch the black X marks." if ins.obstacles else ""))
        first = W.render_video(ins)[0]
        assert (first[W.disc_mask(ins.ball)] == W.BALL_RGB).all()
        assert (first[target & ~W.disc_mask(ins.ball)] == W.TARGET_RGB).all()
    assert min(counts.values()) > 30  # 0, 1 and 2 obstacles all occur


def test_x_mark_shape():
    mask = W.x_mark_mask((20, 30))
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (20, 32, 30, 42)  # a 13x13 box
    assert (mask[30:43, 20:33] == mask[30:43, 20:33].T).all() and (mask[30:43, 20:33] == mask[30:43, 20:33][::-1]).all()
    row = mask[30 + 3, 20:33]
    assert row.sum() == 6  # two strokes, 3 pixels across a row each (2 px measured across the stroke)


def test_ground_truth_passes_and_keeps_constant_speed_and_clearance(instances):
    for ins in instances:
        centres = ins.centres()
        assert np.allclose(np.diff(arc_length(ins.waypoints, centres)), path_length(ins.waypoints) / 16)
        assert np.allclose(centres[-1], ins.target_centre) and np.allclose(centres[0], ins.ball)
        dense = W.positions_along(ins.waypoints, 400)
        assert (W.distance_to_boxes(dense, ins.obstacles) >= W.BALL_RADIUS + W.CLEARANCE - 1e-9).all()
        verdict = W.check_video(W.render_video(ins), ins)
        assert verdict.success, (ins.index, verdict)


def test_ground_truth_survives_the_video_codec(tmp_path, instances):
    for ins in instances[:10]:
        frames = W.render_video(ins)
        decoded = F.read_video(F.write_video(tmp_path / "v.mp4", frames))
        assert decoded.shape == frames.shape
        assert W.check_video(decoded, ins).success


def test_a_blocked_straight_path_detours(instances):
    ins = detour_instance(instances)
    straight = np.linspace(ins.ball, ins.target_centre, 400)
    assert (W.distance_to_boxes(straight, ins.obstacles) < W.BALL_RADIUS + W.CLEARANCE).any()
    assert sum(len(i.waypoints) == 3 for i in instances) > 30


def test_hand_made_violations_fail_exactly_their_rule(instances):
    plain = next(i for i in instances if not i.obstacles)
    gt = plain.centres()

    halfway = np.linspace(gt[0], (gt[0] + gt[-1]) / 2, W.FRAMES)  # undershoot
    assert W.check_video(W.render_video(plain, halfway), plain).failed_rules() == ["goal"]

    shrinking = [6] * 6 + [3] * 5 + [6] * 6  # radius 3: a quarter of the area
    assert W.check_video(W.render_video(plain, radii=shrinking), plain).failed_rules() == ["size"]
    growing = [6] * 16 + [8.5]  # about twice the area
    assert W.check_video(W.render_video(plain, radii=growing), plain).failed_rules() == ["size"]

    blocked = detour_instance(instances)
    straight = W.positions_along([blocked.ball, blocked.target_centre], W.FRAMES)
    verdict = W.check_video(W.render_video(blocked, straight), blocked)
    assert verdict.failed_rules() == ["obstacles"] and verdict.touching_frames

    gone = W.render_video(plain)
    gone[-1] = W.render_background(plain)  # the ball vanishes in the last frame
    assert W.check_video(gone, plain).failed_rules() == ["goal", "size"]


def test_nearest_resize_path(instances):
    ins = detour_instance(instances)
    frames = W.render_video(ins, W.positions_along([ins.ball, ins.target_centre], W.FRAMES))
    reference = W.check_video(frames, ins)
    double = frames.repeat(2, axis=1).repeat(2, axis=2)  # 256x256
    assert (W.resize_nearest(double) == frames).all()
    assert W.check_video(double, ins) == reference
    wide = frames.repeat(3, axis=2)  # 128 high, 384 wide
    assert W.check_video(wide, ins) == reference
    small = W.resize_nearest(frames, 64)
    assert small.shape == (W.FRAMES, 64, 64, 3)
    assert W.check_video(small, ins).areas[0] == pytest.approx(reference.areas[0], rel=0.25)
    with pytest.raises(ValueError, match="uint8"):
        W.check_video(frames[0], ins)


def test_wilson_interval():
    lo, hi = W.wilson_interval(50, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    lo, hi = W.wilson_interval(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.27753, abs_tol=1e-4)
    assert W.wilson_interval(0, 0) == (0.0, 1.0)


def test_cli_generates_and_scores_a_bench_layout(tmp_path, capsys):
    tasks, videos = tmp_path / "tasks", tmp_path / "runs" / "baseline"
    assert toy_cli(["generate", "--out", str(tasks), "--n", "4", "--seed", "5", "--split", "fresh"]) == 0
    folders = F.iter_task_dirs(tasks)
    assert [f.name for f in folders] == ["00000", "00001", "00002", "00003"]
    out = videos / "fresh" / W.TASK_NAME
    out.mkdir(parents=True)
    shutil.copy(folders[0] / "ground_truth.mp4", out / "00000.mp4")
    shutil.copy(folders[1] / "ground_truth.mp4", out / "00001.mp4")
    ins = F.load_instance(folders[2])
    still = np.repeat(W.render_video(ins)[:1], W.FRAMES, axis=0)  # the ball never moves
    F.write_video(out / "00002.mp4", still)
    assert toy_cli(["score", "--videos", str(videos), "--tasks", str(tasks)]) == 0
    printed = capsys.readouterr().out
    assert "2/4 succeed: 50.0%" in printed
    summary = json.loads((videos / "toy_scores.json").read_text())
    assert summary["failures"] == {"goal": 1, "obstacles": 0, "size": 0, "missing": 1}
    assert summary["per_task"]["fresh/ball_to_target_data-generator/00003"] == {"success": False, "missing": True}
    assert toy_cli(["score", "--videos", str(videos), "--tasks", str(tmp_path / "none")]) == 2


def test_square_pixels_find_the_drawn_square_and_nothing_else():
    for index in range(20):
        instance = W.generate_instance(3, index)
        red = W.square_pixels(W.first_frame(instance))
        ys, xs = np.nonzero(red)
        assert (xs.min(), ys.min()) == tuple(instance.target)
        assert red.sum() == W.TARGET_SIZE ** 2


def test_results_count_goal_failures_where_the_video_moved_the_square(tmp_path):
    """A video whose square slides onto the ball's end fails the goal rule: counted as moved, ball on it."""
    import sys

    from tto_runner import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import toy_results

    tasks = tmp_path / "tasks"
    F.write_instances(tasks, 2, seed=5, split="toy")
    videos = tmp_path / "out" / "tto"
    for index, task_dir in enumerate(F.iter_task_dirs(tasks)):
        instance = F.load_instance(task_dir)
        frames = W.render_video(instance)
        if index == 0:                  # paint the square where the ball ends, 30 px away from its place
            end = instance.centres()[-1]
            end = end + np.array([30.0 if end[0] < 64 else -30.0, 0.0])
            frames = W.render_video(instance, np.repeat(end[None], W.FRAMES, 0))
            frames[-1][W.square_pixels(frames[-1])] = 255
            half = W.TARGET_SIZE // 2
            x0, y0 = int(end[0]) - half, int(end[1]) - half
            frames[-1, y0:y0 + W.TARGET_SIZE, x0:x0 + W.TARGET_SIZE] = W.TARGET_RGB
            frames[-1][W.disc_mask(end)] = W.BALL_RGB
        path = videos / f"{task_dir.relative_to(tasks).as_posix()}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        F.write_video(path, frames)
    counts = toy_results.goal_failures_by_square(videos, tasks)
    assert counts == {"goal_failures": 1, "square_moved": 1, "ball_at_moved_square": 1}


def test_rule_margins_carry_the_checker_verdict_and_grow_with_how_clearly_it_holds(instances):
    plain = next(i for i in instances if not i.obstacles)
    gt = plain.centres()
    for ins in instances[:60]:                       # ground truth, and the ball stopping at every fraction
        for stop in (0.2, 0.5, 0.8, 0.95, 1.0):
            centres = np.linspace(ins.centres()[0], ins.ball + stop * (ins.centres()[-1] - ins.ball), W.FRAMES)
            video = W.render_video(ins, centres, radii=[6] * 16 + [6 - 4 * (1 - stop)])
            verdict, margins = W.check_video(video, ins), W.rule_margins(video, ins)
            for rule in W.RULES:
                if rule != "obstacles" or ins.obstacles:
                    assert (margins[rule] >= 0) == getattr(verdict, rule), (ins.index, stop, rule, margins)
    depths = [W.rule_margins(W.render_video(plain, np.linspace(gt[0], gt[0] + f * (gt[-1] - gt[0]), W.FRAMES)),
                             plain)["goal"] for f in (0.5, 0.8, 0.9, 1.0)]
    assert depths == sorted(depths) and depths[0] < 0 < depths[-1]
    blocked = detour_instance(instances)
    straight = W.render_video(blocked, W.positions_along([blocked.ball, blocked.target_centre], W.FRAMES))
    assert W.rule_margins(straight, blocked)["obstacles"] < 0 < W.rule_margins(W.render_video(blocked),
                                                                                  blocked)["obstacles"]
