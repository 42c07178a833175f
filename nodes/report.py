"""Readable outputs of a TTO run: the reward curve as an image and a JSON report."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

_COLORS = [(220, 60, 60), (40, 120, 220), (40, 160, 80), (200, 140, 20), (150, 70, 190), (30, 170, 170)]


def render_reward_curve(history, queries, threshold: float, width: int = 640, height: int = 360) -> torch.Tensor:
    """Loss per iteration (black) with the stop threshold (dashed), and each query's score in [0, 1]
    (coloured, right axis). Returns a ComfyUI IMAGE [1, H, W, 3]."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 50, width - 50, 30, height - 40
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    n = max(len(history), 2)
    losses = [r.loss for r in history if math.isfinite(r.loss)]
    hi = max(losses + [threshold]) * 1.05 if losses else 1.0

    def x_at(i):
        return left + (right - left) * i / (n - 1)

    def y_loss(v):
        return bottom - (bottom - top) * min(max(v / hi, 0.0), 1.0)

    def y_score(v):
        return bottom - (bottom - top) * min(max(v, 0.0), 1.0)

    ty = y_loss(threshold)
    for x in range(left, right, 12):
        draw.line([(x, ty), (min(x + 6, right), ty)], fill=(120, 120, 120))
    for q_index in range(len(queries)):
        color = _COLORS[q_index % len(_COLORS)]
        pts = [(x_at(i), y_score(r.query_scores[q_index])) for i, r in enumerate(history)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        for p in pts:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=color)
    loss_pts = [(x_at(i), y_loss(r.loss)) for i, r in enumerate(history) if math.isfinite(r.loss)]
    if len(loss_pts) > 1:
        draw.line(loss_pts, fill=(0, 0, 0), width=3)
    for p in loss_pts:
        draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=(0, 0, 0))
    draw.text((left, 8), f"teacher loss (black, 0..{hi:.2f}) and query scores (colour, 0..1); "
                         f"threshold {threshold:.2f} dashed", fill=(0, 0, 0))
    draw.text((left, bottom + 8), f"iteration 1 .. {len(history)}", fill=(0, 0, 0))
    for q_index, q in enumerate(queries[:6]):
        draw.text((left + 4, top + 4 + 12 * q_index), f"[{q.kind}] {q.text[:70]}", fill=_COLORS[q_index % 6])
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def sampling_cost(steps: int, cfg: float, sample_s: float, loop_cost: dict | None = None) -> dict:
    """Cost of a run in model passes and seconds. cfg != 1 doubles every reasoner pass (cond + uncond).
    `equal_wall_samples`: how many plain samples fit in this run's wall time (Best-of-N at equal cost)."""
    guidance = 1 if cfg == 1.0 else 2
    loop = dict(loop_cost or {})
    cost = {
        "reasoner_forward": (loop.pop("reasoner_calls", 0) + steps) * guidance,
        "reasoner_backward": loop.pop("reasoner_backward", 0) * guidance,
        **loop,
        "final_sample_s": round(sample_s, 3),
        "wall_s": round(loop.get("wall_s", 0.0) + sample_s, 3),
    }
    cost["equal_wall_samples"] = max(1, round(cost["wall_s"] / sample_s)) if sample_s > 0 else None
    return cost


def tto_report(result, queries, config, cost: dict | None = None) -> str:
    last = result.history[-1] if result.history else None
    per_role = {}
    for r in result.history:
        for k, v in r.timings.items():
            per_role[k] = per_role.get(k, 0.0) + v
    return json.dumps({
        "iterations": result.iterations,
        "stop_reason": result.stop_reason,
        "first_loss": result.history[0].loss if result.history else None,
        "final_loss": result.final_loss,
        "loss_threshold": config.loss_threshold,
        "decoded_frames": result.decoded_frames,
        "teacher_frames": result.teacher_frames,
        "queries": [{"question": q.text, "kind": q.kind, "expected": q.answer,
                     "first_score": round(result.history[0].query_scores[i], 4),
                     "final_score": round(last.query_scores[i], 4)} for i, q in enumerate(queries)] if last else [],
        "seconds": round(sum(r.seconds for r in result.history), 3),
        "seconds_per_role": {k: round(v, 3) for k, v in per_role.items()},
        "loss_curve": [round(r.loss, 5) for r in result.history],
        "cost": cost or {},
    }, indent=2)
