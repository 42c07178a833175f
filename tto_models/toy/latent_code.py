"""A designed latent space for the toy world, in Wan 2.2's latent geometry (48 x 5 x 8 x 8 for 17 x 128 x 128).

Why designed and not learned: a learned autoencoder spreads one ball over many latent cells, so a reasoner
that is unsure where the ball goes averages codes into a haze the decoder draws as nothing. Here every
position is an *offset field*: each cell holds (object centre - cell centre) / SCALE, clipped to +-REACH
(48 px). Within reach the field is linear in the position, so averaging two nearby codes averages the
positions: an unsure reasoner draws one ball in between, a systematic error (undershoot, drift) and not a
vanishing ball, which is how real video models fail. The clip keeps every value local, so a convolutional
encoder can write it from the pixels around each cell.

Channels (the rest are zero):
- 0-11  the ball, 3 per output frame of the latent frame (Wan 2.2 groups frames causally: latent frame 0
        is frame 0, latent frame t > 0 is frames 4t-3 .. 4t): x offset, y offset, size (radius / 6 - 1);
- 12-13 the target square's centre, as offsets;
- 14-17 up to two X marks' centres, as offsets (sorted by position; a missing mark sits far outside);
- 18-33 mark ink: for each 4 x 4 px sub-block of the cell, twice the share of its pixels on a stroke,
        which tells the decoder the strokes' shape where offsets alone do not.
Still things (target, marks, ink) repeat in every latent frame.
"""

from __future__ import annotations

import numpy as np

from . import world

CHANNELS = 48
CELL = 16                            # pixels per latent cell (Wan 2.2: 16 x 16)
GRID = world.SIZE // CELL            # 8
LATENT_FRAMES = (world.FRAMES + 3) // 4   # 5
SUB_FRAMES = 4                       # output frames per latent frame
SCALE = 32.0                         # pixels per unit of an offset field
REACH = 1.5                          # offsets are clipped to +-REACH (48 px)
READ_MARGIN = 0.25                   # read positions from cells at least this far inside the clip
SIZE_GAIN = 1.0                      # size channel = SIZE_GAIN * (radius / BALL_RADIUS - 1)

BALL_CHANNEL = 0                     # 3 per sub-frame: dx, dy, size
TARGET_CHANNEL = 12
MARK_CHANNEL = 14                    # 2 marks x (dx, dy)
MAX_MARKS = 2
INK_CHANNEL = 18
SUB_BLOCK = 4                        # ink resolution in pixels
INK_GAIN = 2.0
USED_CHANNELS = INK_CHANNEL + (CELL // SUB_BLOCK) ** 2   # 34
STILL_CHANNELS = slice(TARGET_CHANNEL, USED_CHANNELS)     # what never moves: target, marks, ink
ABSENT_MARK = (-3 * SCALE, -3 * SCALE)   # a missing mark's centre, far outside the frame

SHAPE = (CHANNELS, LATENT_FRAMES, GRID, GRID)

_CELL_CENTRES = (np.arange(GRID) + 0.5) * CELL
_CY, _CX = np.meshgrid(_CELL_CENTRES, _CELL_CENTRES, indexing="ij")


def frame_slots() -> list[tuple[int, int]]:
    """(latent frame, sub-frame slot) of each output frame 0..16 (frame 0 sits in slot 3 of latent frame 0,
    the one output frame the decoder keeps of it)."""
    slots = [(0, SUB_FRAMES - 1)]
    for f in range(1, world.FRAMES):
        slots.append(((f + 3) // 4, (f - 1) % 4))
    return slots


def _offsets(point) -> tuple[np.ndarray, np.ndarray]:
    return (np.clip((point[0] - _CX) / SCALE, -REACH, REACH).astype(np.float32),
            np.clip((point[1] - _CY) / SCALE, -REACH, REACH).astype(np.float32))


def mark_centre(top_left) -> tuple[float, float]:
    return (top_left[0] + world.X_SIZE / 2, top_left[1] + world.X_SIZE / 2)


def ink(instance: world.Instance) -> np.ndarray:
    """[16, 8, 8]: INK_GAIN x the share of stroke pixels in each 4 x 4 sub-block of each cell."""
    strokes = np.zeros((world.SIZE, world.SIZE), np.float32)
    for o in instance.obstacles:
        strokes[world.x_mark_mask(o)] = 1.0
    per = CELL // SUB_BLOCK
    # [GRID, per, SUB, GRID, per, SUB] -> mean over the sub-block pixels
    blocks = strokes.reshape(GRID, per, SUB_BLOCK, GRID, per, SUB_BLOCK).mean(axis=(2, 5))
    return INK_GAIN * blocks.transpose(1, 3, 0, 2).reshape(per * per, GRID, GRID)


def still_code(instance: world.Instance) -> np.ndarray:
    """[48, 8, 8]: the target, the marks and their ink (what never moves)."""
    code = np.zeros((CHANNELS, GRID, GRID), np.float32)
    code[TARGET_CHANNEL], code[TARGET_CHANNEL + 1] = _offsets(instance.target_centre)
    marks = sorted(instance.obstacles)[:MAX_MARKS]
    for m in range(MAX_MARKS):
        centre = mark_centre(marks[m]) if m < len(marks) else ABSENT_MARK
        code[MARK_CHANNEL + 2 * m], code[MARK_CHANNEL + 2 * m + 1] = _offsets(centre)
    code[INK_CHANNEL:USED_CHANNELS] = ink(instance)
    return code


def encode(instance: world.Instance, centres=None, radii=None) -> np.ndarray:
    """The code [48, 5, 8, 8] of the instance's scene with the ball at `centres` ([17, 2], default: the
    ground truth) and of `radii` ([17], default: the true radius)."""
    centres = instance.centres() if centres is None else np.asarray(centres, np.float64)
    radii = np.full(world.FRAMES, float(world.BALL_RADIUS)) if radii is None else np.asarray(radii, np.float64)
    if centres.shape != (world.FRAMES, 2) or radii.shape != (world.FRAMES,):
        raise ValueError(f"Need {world.FRAMES} centres and radii, got {centres.shape} and {radii.shape}.")
    code = np.repeat(still_code(instance)[:, None], LATENT_FRAMES, axis=1)
    for f, (t, s) in enumerate(frame_slots()):
        slots = range(SUB_FRAMES) if f == 0 else [s]   # latent frame 0: every slot holds frame 0
        for slot in slots:
            c = BALL_CHANNEL + 3 * slot
            code[c, t], code[c + 1, t] = _offsets(centres[f])
            code[c + 2, t] = SIZE_GAIN * (radii[f] / world.BALL_RADIUS - 1.0)
    return code


def with_still_moved(code: np.ndarray, target_centres, mark_fade) -> np.ndarray:
    """A copy of `code` with what should stay still moved: the target's centre at `target_centres[t]` in
    latent frame t ([5, 2]) and the marks faded by `mark_fade[t]` ([5]; 1: gone). What a reasoner does
    when a LoRA finds that moving the square to the ball, or dropping the marks, satisfies a teacher."""
    out = np.array(code, np.float32, copy=True)
    absent = np.stack(_offsets(ABSENT_MARK) * MAX_MARKS)          # (dx, dy) of each mark slot, far away
    marks = slice(MARK_CHANNEL, MARK_CHANNEL + 2 * MAX_MARKS)
    for t in range(LATENT_FRAMES):
        out[TARGET_CHANNEL, t], out[TARGET_CHANNEL + 1, t] = _offsets(target_centres[t])
        f = float(mark_fade[t])
        out[marks, t] = (1 - f) * out[marks, t] + f * absent
        out[INK_CHANNEL:USED_CHANNELS, t] *= 1 - f
    return out


def _read_point(field_x: np.ndarray, field_y: np.ndarray) -> np.ndarray:
    """A position from its [8, 8] offset fields: the mean of (offset x SCALE + cell centre) over the cells
    within reach (all cells if none is: the point is then only roughly placed)."""
    fx, fy = np.asarray(field_x, np.float64), np.asarray(field_y, np.float64)
    near = (np.abs(fx) < REACH - READ_MARGIN) & (np.abs(fy) < REACH - READ_MARGIN)
    if not near.any():
        near = np.ones_like(near)
    return np.array([(fx * SCALE + _CX)[near].mean(), (fy * SCALE + _CY)[near].mean()])


def ball_track(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read a code back: ball centres [17, 2] and radii [17]."""
    code = np.asarray(code, np.float64)
    centres, radii = [], []
    for t, s in frame_slots():
        c = BALL_CHANNEL + 3 * s
        centres.append(_read_point(code[c, t], code[c + 1, t]))
        radii.append(world.BALL_RADIUS * (1.0 + code[c + 2, t].mean() / SIZE_GAIN))
    return np.stack(centres), np.asarray(radii)


def target_centre(code: np.ndarray, latent_frame: int = 0) -> np.ndarray:
    """The target's centre read from one latent frame of a code (default: frame 0)."""
    return _read_point(code[TARGET_CHANNEL, latent_frame], code[TARGET_CHANNEL + 1, latent_frame])


def scene_kept(code: np.ndarray, instance: world.Instance) -> dict[str, float | None]:
    """How well a code keeps what should stay still after latent frame 0: the marks' ink in the later latent
    frames as a share of the instance's (projected on it; None without marks), and how far the target's
    centre has drifted by the last latent frame, in pixels."""
    code = np.asarray(code, np.float64)
    true_ink = ink(instance).astype(np.float64)
    norm = float((true_ink * true_ink).sum())
    kept = None
    if norm > 0:
        kept = float(np.mean([(code[INK_CHANNEL:USED_CHANNELS, t] * true_ink).sum() / norm
                              for t in range(1, LATENT_FRAMES)]))
    drift = target_centre(code, -1) - np.asarray(instance.target_centre)
    return {"ink_kept": kept, "target_drift_px": float(np.hypot(*drift))}


def plan_verdict(code: np.ndarray, instance: world.Instance) -> world.Verdict:
    """The checker's three rules applied to the ball positions and sizes a code holds (not to pixels): what a
    perfect decoder of this code would be judged. The scene (target, marks) is the instance's."""
    centres, radii = ball_track(code)
    goal = world.inside_target(centres[-1], instance.target)
    clearance = world.distance_to_boxes(centres, instance.obstacles)
    touching = [int(f) for f in np.nonzero(clearance < radii - 0.5)[0]]
    areas = np.pi * np.maximum(radii, 0.0) ** 2
    ratio = areas / areas[0] if areas[0] > 0 else np.zeros_like(areas)
    size_ok = bool(((ratio >= world.AREA_RANGE[0]) & (ratio <= world.AREA_RANGE[1])).all())
    return world.Verdict(bool(goal and not touching and size_ok), bool(goal), not touching, size_ok,
                         (float(centres[-1][0]), float(centres[-1][1])), [int(round(a)) for a in areas], touching)
