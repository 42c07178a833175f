"""The toy world's designed latent code: positions read back, averaging codes averages positions, and the
checker's rules applied to a code agree with the checker on the videos drawn from it."""

import numpy as np
import pytest

from tto_models.toy import code_autoencoder as CA
from tto_models.toy import latent_code as LC
from tto_models.toy import world as W


@pytest.fixture(scope="module")
def instances():
    return [W.generate_instance(11, i) for i in range(60)]


def test_code_has_wan22_geometry_and_frame_groups():
    assert LC.SHAPE == (48, 5, 8, 8)
    slots = LC.frame_slots()
    assert len(set(slots)) == W.FRAMES == 17
    # Wan 2.2 groups frames causally: frame 0 alone, then four per latent frame
    assert slots[0] == (0, 3) and slots[1] == (1, 0) and slots[4] == (1, 3) and slots[16] == (4, 3)


def test_positions_sizes_and_target_read_back(instances):
    rng = np.random.default_rng(0)
    for ins in instances[:20]:
        centres = rng.uniform(0, W.SIZE, (W.FRAMES, 2))
        radii = rng.uniform(2, 9, W.FRAMES)
        code = LC.encode(ins, centres, radii)
        assert code.shape == LC.SHAPE and not code[LC.USED_CHANNELS:].any()
        got_c, got_r = LC.ball_track(code)
        np.testing.assert_allclose(got_c, centres, atol=1e-4)
        np.testing.assert_allclose(got_r, radii, atol=1e-4)
        np.testing.assert_allclose(LC.target_centre(code), ins.target_centre, atol=1e-4)


def test_averaging_nearby_codes_averages_positions(instances):
    """Within reach (48 px) the fields are linear: an unsure reasoner's mean code holds the mean position."""
    for ins in instances[:10]:
        a = np.asarray(ins.centres())
        b = np.clip(a + np.array([20.0, -12.0]), 0, W.SIZE)
        mean_code = 0.5 * (LC.encode(ins, a) + LC.encode(ins, b))
        np.testing.assert_allclose(LC.ball_track(mean_code)[0], 0.5 * (a + b), atol=1.0)


def test_every_value_is_local(instances):
    """Offsets are clipped to +-REACH, so no cell needs to know about objects beyond 48 px."""
    for ins in instances[:10]:
        code = LC.encode(ins)
        assert np.abs(code[:LC.INK_CHANNEL]).max() <= LC.REACH


def test_ink_counts_the_stroke_pixels(instances):
    for ins in instances[:15]:
        strokes = sum(W.x_mark_mask(o).sum() for o in ins.obstacles)
        ink = LC.ink(ins)
        assert ink.sum() * LC.SUB_BLOCK ** 2 / LC.INK_GAIN == pytest.approx(strokes)
        assert (ink.sum() > 0) == bool(ins.obstacles)


def test_plan_verdict_agrees_with_the_checker(instances):
    """Ground truth passes both; undershoots, paths through a mark and shrinking balls fail the same rule
    in both, whether judged on the code or on the video drawn from it."""
    kinds = {"goal": 0, "obstacles": 0, "size": 0}
    for ins in instances:
        assert LC.plan_verdict(LC.encode(ins), ins).success
        assert W.check_video(W.render_video(ins), ins).success
        start, end = np.asarray(ins.ball), np.asarray(ins.target_centre)
        short = W.positions_along([start, start + 0.5 * (end - start)], W.FRAMES)
        shrink = np.linspace(W.BALL_RADIUS, 3.0, W.FRAMES)
        cases = [(short, None, "goal"), (ins.centres(), shrink, "size")]
        if ins.obstacles:
            through = LC.mark_centre(ins.obstacles[0])
            cases.append((W.positions_along([start, through, end], W.FRAMES), None, "obstacles"))
        for centres, radii, rule in cases:
            by_code = LC.plan_verdict(LC.encode(ins, centres, radii), ins)
            by_pixels = W.check_video(W.render_video(ins, centres, radii), ins)
            assert not getattr(by_code, rule) and not getattr(by_pixels, rule), (ins.index, rule)
            kinds[rule] += 1
    assert min(kinds.values()) > 10


def test_training_scenes_break_each_rule_and_keep_the_scene():
    rng = np.random.default_rng(1)
    failed = {r: 0 for r in W.RULES}
    for i in range(120):
        ins = W.generate_instance(CA.TRAIN_SEED, i)
        centres, radii = CA.training_scene(rng, ins)
        np.testing.assert_allclose(centres[0], ins.ball, atol=2.0)
        for r in LC.plan_verdict(LC.encode(ins, centres, radii), ins).failed_rules():
            failed[r] += 1
    assert all(n >= 10 for n in failed.values()), failed


def test_uneven_tracks_keep_the_path_and_vary_the_steps():
    rng = np.random.default_rng(4)
    ins = W.generate_instance(CA.TRAIN_SEED, 3)
    even = ins.centres()
    uneven = CA._uneven(rng, even)
    np.testing.assert_allclose(uneven[0], even[0])
    steps = np.linalg.norm(np.diff(uneven, axis=0), axis=1)
    assert steps.max() > 2 * np.linalg.norm(np.diff(even, axis=0), axis=1).max()


def test_a_ball_drawn_too_large_in_one_frame_costs_through_the_area_term():
    """The checker compares each frame's ball area with frame 0's; per-pixel errors alone barely see it."""
    import torch

    ins = W.generate_instance(CA.TRAIN_SEED, 5)
    radii = np.full(W.FRAMES, float(W.BALL_RADIUS))
    truth = W.render_video(ins)
    radii[6] = 1.3 * W.BALL_RADIUS
    wrong = W.render_video(ins, ins.centres(), radii)

    def loss(video, area_weight=CA.AREA_WEIGHT):
        t = torch.from_numpy(video.transpose(3, 0, 1, 2)[None].astype(np.float32) / 255.0)
        target = torch.from_numpy(truth.transpose(3, 0, 1, 2)[None].astype(np.float32) / 255.0)
        return float(CA.decoder_loss(t, target, area_weight))

    assert loss(truth) < 1e-3
    assert loss(wrong) > 1.5 * loss(wrong, area_weight=0.0)


def test_moving_the_still_things_moves_only_them(instances):
    ins = next(i for i in instances if len(i.obstacles) == 2)
    code = LC.encode(ins)
    goal = np.asarray(ins.target_centre)
    targets = goal + np.linspace(0, 1, LC.LATENT_FRAMES)[:, None] * np.array([20.0, -10.0])
    moved = LC.with_still_moved(code, targets, np.array([0, 0, 0, 0.5, 1.0]))
    for t in range(LC.LATENT_FRAMES):
        np.testing.assert_allclose(LC.target_centre(moved[:, t:t + 1]), targets[t], atol=0.5)
    np.testing.assert_array_equal(moved[:LC.TARGET_CHANNEL], code[:LC.TARGET_CHANNEL])     # the ball is untouched
    np.testing.assert_array_equal(moved[LC.MARK_CHANNEL:, :3], code[LC.MARK_CHANNEL:, :3])
    assert not moved[LC.INK_CHANNEL:LC.USED_CHANNELS, 4].any()                           # faded: no ink
    np.testing.assert_allclose(moved[LC.MARK_CHANNEL:LC.INK_CHANNEL, 4], -LC.REACH)      # marks far away


def test_scene_kept_measures_faded_ink_and_a_drifting_square(instances):
    ins = next(i for i in instances if len(i.obstacles) == 2)
    code = LC.encode(ins)
    assert LC.scene_kept(code, ins) == pytest.approx({"ink_kept": 1.0, "target_drift_px": 0.0}, abs=0.3)
    goal = np.asarray(ins.target_centre)
    targets = goal + np.linspace(0, 1, LC.LATENT_FRAMES)[:, None] * np.array([6.0, -8.0])
    half_faded = LC.with_still_moved(code, targets, np.array([0, 0.5, 0.5, 0.5, 0.5]))
    kept = LC.scene_kept(half_faded, ins)
    assert kept["ink_kept"] == pytest.approx(0.5, abs=0.01)
    assert kept["target_drift_px"] == pytest.approx(10.0, abs=0.5)
    no_marks = next(i for i in instances if not i.obstacles)
    assert LC.scene_kept(LC.encode(no_marks), no_marks)["ink_kept"] is None
