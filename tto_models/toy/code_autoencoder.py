"""Train the host's 48-channel TAEHV for the designed code (latent_code.py): the decoder draws a code's scene,
the encoder reads a first frame back into latent frame 0 of its code.

The decoder learns from scenes the reasoner may produce, not only ground truth: straight paths that stop
anywhere, paths through the marks, balls that shrink or grow. It trains on spatial crops of 4 x 4 cells
of whole clips (it is convolutional; a crop costs a quarter of a frame). Whole clips, because its memory
blocks carry state from frame to frame: trained on the first 9 frames only, it drew the later balls twice
too large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import latent_code as LC
from . import world
from .optim import Progress, clipped_step
from .taehv import TAEHV

TRAIN_SEED = 100          # instance stream of the training scenes
CHECK_SEED = 1000         # held-out stream for the figures
CROP_CELLS = 4
CROP_LATENT_FRAMES = 5    # the whole clip: memory blocks carry state frame to frame, so every frame trains
OBJECT_WEIGHT = 20.0      # loss weight of non-white pixels (ball, target, marks) against the background
COLOUR_MARGIN = 20.0      # 0-255 units a pixel should clear the checker's ball-colour thresholds by
COLOUR_WEIGHT = 3.0
HALO = 3                  # px around the ball that weigh as much as the ball in the colour term
AREA_WEIGHT = 4.0         # the checker's ball area per frame, against the drawn scene's
AREA_SOFTNESS = 8.0       # 0-255 units of colour margin over which a pixel goes from not-ball to ball
JERKY = 0.35              # share of training scenes whose ball moves at uneven steps along its path


# ------------------------------------------------------------------------------------------- scenes


def _straight(start, end) -> np.ndarray:
    return world.positions_along([start, end], world.FRAMES)


def _uneven(rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """The same path at uneven steps (0 to several times the mean, now and then a sideways jolt): a
    reasoner's track. Trained on even steps only, the decoder drew such a ball twice or not at all at
    latent-frame seams."""
    steps = rng.gamma(rng.uniform(0.5, 2.0), size=world.FRAMES - 1)
    progress = np.concatenate([[0.0], np.cumsum(steps) / steps.sum()])
    seg = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(seg)])
    s = progress * along[-1]
    out = np.stack([np.interp(s, along, centres[:, 0]), np.interp(s, along, centres[:, 1])], axis=1)
    out[1:] += rng.normal(0, rng.uniform(0, 3), out[1:].shape)
    return out


def training_scene(rng: np.random.Generator, instance: world.Instance) -> tuple[np.ndarray, np.ndarray]:
    """Ball centres [17, 2] and radii [17] for one training scene of the instance."""
    start = np.asarray(instance.ball)
    kind = rng.random()
    if kind < 0.25:
        centres = instance.centres()
    elif kind < 0.5:        # stops near the target (undershoot, overshoot)
        centres = _straight(start, np.asarray(instance.target_centre) + rng.normal(0, 10, 2))
    elif kind < 0.7 and instance.obstacles:   # straight through a mark
        o = LC.mark_centre(instance.obstacles[rng.integers(len(instance.obstacles))])
        end = np.asarray(o) + (np.asarray(o) - start) * rng.uniform(0, 1.0)
        centres = _straight(start, end)
    else:                   # anywhere
        centres = _straight(start, rng.uniform(0, world.SIZE, 2))
    if rng.random() < JERKY:
        centres = _uneven(rng, centres)
    centres = np.clip(centres + rng.normal(0, 0.5, centres.shape) * (rng.random() < 0.3), 2, world.SIZE - 2)
    radii = np.full(world.FRAMES, float(world.BALL_RADIUS))
    if rng.random() < 0.3:
        radii = np.linspace(world.BALL_RADIUS, rng.uniform(2.5, 9.0), world.FRAMES)
    return centres, radii


def scene_pair(rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(code [48, 5, 8, 8], frames float [3, 17, 128, 128] in [0, 1]) of training scene `index`."""
    instance = world.generate_instance(TRAIN_SEED, index)
    centres, radii = training_scene(rng, instance)
    frames = world.render_video(instance, centres, radii)
    return LC.encode(instance, centres, radii), frames.transpose(3, 0, 1, 2).astype(np.float32) / 255.0


def _crop(rng, code: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4 x 4 cells of the first CROP_LATENT_FRAMES latent frames, half the time over a drawn object."""
    c, f = CROP_CELLS, 4 * CROP_LATENT_FRAMES - 3
    ink = (frames[:, :f] < 0.9).any(axis=(0, 1))             # any non-white pixel in the window
    if rng.random() < 0.5 and ink.any():
        ys, xs = np.nonzero(ink)
        k = rng.integers(len(ys))
        cy, cx = ys[k] // LC.CELL, xs[k] // LC.CELL
        y0 = int(np.clip(cy - rng.integers(c), 0, LC.GRID - c))
        x0 = int(np.clip(cx - rng.integers(c), 0, LC.GRID - c))
    else:
        y0, x0 = (int(v) for v in rng.integers(0, LC.GRID - c + 1, 2))
    p = LC.CELL
    return (code[:, :CROP_LATENT_FRAMES, y0:y0 + c, x0:x0 + c],
            frames[:, :f, y0 * p:(y0 + c) * p, x0 * p:(x0 + c) * p])


REASONER_INDEX = 50_000   # the reasoner scenes' instances, apart from the drawn scenes' (same stream)


def reasoner_scenes(reasoner, n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """n (code, uint8 frames [17, 128, 128, 3]) pairs: the reasoner's own codes (4-step samples and one-step
    predictions, half each) with the scene they hold drawn exactly (the ball track read back from the code).
    The reasoner's codes are not exact ground truth, and a decoder trained on ground truth alone drew their
    ball twice or not at all at latent-frame seams, so the checker failed sizes that the code got right."""
    from . import reasoner as R

    rng = np.random.default_rng([seed, REASONER_INDEX])
    out = []
    for i in range(n):
        instance = world.generate_instance(TRAIN_SEED, REASONER_INDEX + i)
        code = R.sample(reasoner.model, LC.encode(instance)[:, 0], seed=int(rng.integers(1 << 30)),
                        one_step=bool(i % 2))
        centres, radii = LC.ball_track(code)
        centres = np.clip(centres, -20, world.SIZE + 20)
        out.append((code, world.render_video(instance, centres, np.clip(radii, 1.0, 3 * world.BALL_RADIUS))))
    return out


def batch(rng, first_index: int, size: int, pool=None, pool_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = []
    for i in range(size):
        if pool and rng.random() < pool_share:
            code, video = pool[rng.integers(len(pool))]
            pairs.append(_crop(rng, code, video.transpose(3, 0, 1, 2).astype(np.float32) / 255.0))
        else:
            pairs.append(_crop(rng, *scene_pair(rng, first_index + i)))
    codes, frames = zip(*pairs)
    return torch.from_numpy(np.stack(codes)), torch.from_numpy(np.stack(frames))


def ball_colour_margin(frames: torch.Tensor) -> torch.Tensor:
    """How far inside the checker's ball-colour box each pixel is, in 0-255 units ([B, 3, ...] -> [B, ...]):
    positive inside (R > 200, 140 < G < 245, B < 110), negative outside."""
    r, g, b = (frames * 255.0).unbind(1)
    return torch.minimum(torch.minimum(r - 200, g - 140), torch.minimum(245 - g, 110 - b))


def soft_ball(margin: torch.Tensor) -> torch.Tensor:
    """The checker's ball-pixel test made differentiable: from `ball_colour_margin`, a pixel goes from
    not-ball to ball (0 to 1) over AREA_SOFTNESS units of colour margin."""
    return torch.sigmoid(margin / AREA_SOFTNESS)


def decoder_loss(decoded: torch.Tensor, frames: torch.Tensor, area_weight: float = AREA_WEIGHT) -> torch.Tensor:
    """Weighted pixel error, plus the checker's colour test made differentiable: ball pixels must land
    inside the ball-colour box and every other pixel outside it, by COLOUR_MARGIN (what decides area and
    centroid, and so every verdict)."""
    weight = 1.0 + OBJECT_WEIGHT * (frames < 0.9).any(dim=1, keepdim=True).float()
    pixels = (weight * (decoded - frames) ** 2).mean()
    ball = ball_colour_margin(frames) > 0
    margin = ball_colour_margin(decoded)
    wrong = torch.where(ball, torch.relu(COLOUR_MARGIN - margin), torch.relu(margin + COLOUR_MARGIN)) / 255.0
    # the ring just outside the ball weighs as much as the ball: a halo of ball colour is a larger ball
    flat = ball.float().flatten(0, 1)[:, None]                   # [B * T, 1, H, W]
    near = F.max_pool2d(flat, 2 * HALO + 1, stride=1, padding=HALO).view_as(ball)
    colour = (wrong * (1.0 + OBJECT_WEIGHT * near)).mean()
    # the checker compares every frame's ball area with frame 0's: per-frame pixel errors that are small
    # on average still drew frame 0's ball 10% small and the last slot of each latent frame 30% large
    soft = soft_ball(margin).sum(dim=(-2, -1))                                # [B, T]
    full = np.pi * world.BALL_RADIUS ** 2
    area = ((soft - ball.float().sum(dim=(-2, -1))) / full).pow(2).mean()
    return pixels + COLOUR_WEIGHT * colour + area_weight * area


# ------------------------------------------------------------------------------------------- training


@dataclass
class Schedule:
    steps: int
    batch: int
    lr: float

    def lr_at(self, step: int) -> float:
        """Linear warm-up over the first 5% (a fresh TAEHV diverges for a while at full rate), then cosine
        down to lr / 10."""
        warm = max(1, self.steps // 20)
        if step < warm:
            return self.lr * (step + 1) / warm
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, self.steps))))


def new_model(seed: int = 0) -> TAEHV:
    torch.manual_seed(seed)
    model = TAEHV()
    with torch.no_grad():
        model.decoder[-1].bias.fill_(1.0)    # start from a white frame
    return model


def train_decoder(model: TAEHV, schedule: Schedule, seed: int = 0, log=print, start_index: int = 0,
                  pool=None, pool_share: float = 0.5, area_weight: float = AREA_WEIGHT) -> TAEHV:
    """`pool`: (code, frames) pairs from `reasoner_scenes`, drawn for a `pool_share` of each batch.
    `area_weight`: the per-frame ball-area term is for a decoder that already draws; from scratch it
    holds the ball's colour on the checker's threshold (soft area matched by half-counted pixels) and
    the decoder never learns the colour: use 0 there (as `train` does)."""
    rng = np.random.default_rng(seed)
    params = list(model.decoder.parameters())
    opt = torch.optim.Adam(params, lr=schedule.lr)
    progress = Progress("decoder", schedule.steps, log)
    for step in range(schedule.steps):
        for g in opt.param_groups:
            g["lr"] = schedule.lr_at(step)
        codes, frames = batch(rng, start_index + step * schedule.batch, schedule.batch, pool, pool_share)
        loss = decoder_loss(model.decode(codes), frames, area_weight)
        clipped_step(opt, loss, params)
        progress(step, loss)
    return model


def first_frame_pair(rng, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame 0 float [3, 128, 128], latent frame 0 of its code [48, 8, 8]) for encoder training."""
    instance = world.generate_instance(TRAIN_SEED, index)
    frame = world.first_frame(instance)
    return frame.transpose(2, 0, 1).astype(np.float32) / 255.0, LC.encode(instance)[:, 0]


def encoder_channel_weights() -> torch.Tensor:
    """[48, 1, 1] loss weights that give the target's two fields and the marks' four as much weight as the
    ball's twelve: with equal weights per channel the encoder learnt the ball and left the target at its prior."""
    w = torch.ones(LC.CHANNELS)
    w[LC.TARGET_CHANNEL:LC.TARGET_CHANNEL + 2] = 6.0
    w[LC.MARK_CHANNEL:LC.MARK_CHANNEL + 2 * LC.MAX_MARKS] = 3.0
    w[LC.USED_CHANNELS:] = 0.1
    return (w * LC.CHANNELS / w.sum()).view(-1, 1, 1)


def train_encoder(model: TAEHV, schedule: Schedule, seed: int = 0, log=print, start_index: int = 0) -> TAEHV:
    rng = np.random.default_rng(seed)
    params = list(model.encoder.parameters())
    opt = torch.optim.Adam(params, lr=schedule.lr)
    weight = encoder_channel_weights()
    progress = Progress("encoder", schedule.steps, log)
    for step in range(schedule.steps):
        for g in opt.param_groups:
            g["lr"] = schedule.lr_at(step)
        frames, codes = zip(*(first_frame_pair(rng, start_index + step * schedule.batch + i)
                              for i in range(schedule.batch)))
        pred = model.encode_still(torch.from_numpy(np.stack(frames)))
        loss = (weight * (pred - torch.from_numpy(np.stack(codes))) ** 2).mean()
        clipped_step(opt, loss, params)
        progress(step, loss)
    return model


# ------------------------------------------------------------------------------------------- figures


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] float -> uint8 [T, H, W, 3], as SaveVideo writes it."""
    return (frames.clamp(0, 1) * 255).round().byte().permute(1, 2, 3, 0).numpy()


@torch.no_grad()
def judge_decoder(model: TAEHV, n: int, seed: int = CHECK_SEED) -> dict:
    """Ground-truth codes of n held-out instances, decoded whole: checker verdicts, and how much of the
    X strokes the decoder draws dark (mark recall) against dark pixels elsewhere."""
    verdicts, recall, stray = [], [], []
    for i in range(n):
        instance = world.generate_instance(seed, i)
        video = to_uint8(model.decode(torch.from_numpy(LC.encode(instance))[None])[0])
        verdicts.append(world.check_video(video, instance))
        dark = (video[0].max(axis=-1) < 128)
        strokes = np.zeros(dark.shape, bool)
        for o in instance.obstacles:
            strokes |= world.x_mark_mask(o)
        if strokes.any():
            recall.append(float(dark[strokes].mean()))
        stray.append(float(dark[~strokes].mean()))
    return {"n": n, **world.tally(verdicts),
            "mark_recall": float(np.mean(recall)) if recall else None, "stray_dark": float(np.mean(stray))}


@torch.no_grad()
def judge_encoder(model: TAEHV, n: int, seed: int = CHECK_SEED) -> dict:
    """Ball and target positions read from encoded first frames against the truth, in pixels."""
    ball, target = [], []
    for i in range(n):
        instance = world.generate_instance(seed, i)
        frame = world.first_frame(instance)
        x = torch.from_numpy(frame.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
        code = np.zeros(LC.SHAPE, np.float32)
        code[:, 0] = model.encode_still(x)[0].numpy()
        centres, _ = LC.ball_track(code)
        ball.append(float(np.hypot(*(centres[0] - np.asarray(instance.ball)))))
        target.append(float(np.hypot(*(LC.target_centre(code) - np.asarray(instance.target_centre)))))
    return {"n": n, "ball_px_mean": float(np.mean(ball)), "ball_px_max": float(np.max(ball)),
            "target_px_mean": float(np.mean(target))}
