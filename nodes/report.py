"""Readable outputs of a TTO run: the reward curve as an image and a JSON report."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

_COLORS = [(220, 60, 60), (40, 120, 220), (40, 160, 80), (200, 140, 20), (150, 70, 190), (30, 170, 170)]


def render_reward_curve(history, queries, threshold: float, width: int = 640, height: int = 420) -> torch.Tensor:
    """Top panel: teacher loss per iteration, scaled to its own range, with the stop threshold. Bottom
    panel: each query's score on [0, 1]. Legend underneath. Returns a ComfyUI IMAGE [1, H, W, 3]."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right = 56, width - 16
    n = max(len(history), 2)

    def x_at(i):
        return left + (right - left) * i / (n - 1)

    def panel(top, bottom, lo, hi, series, label):
        draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
        draw.text((4, top), f"{hi:.3g}", fill=(0, 0, 0))
        draw.text((4, bottom - 10), f"{lo:.3g}", fill=(0, 0, 0))
        draw.text((left + 110, top - 13), label, fill=(0, 0, 0))

        def y_at(v):
            return bottom - (bottom - top) * (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0)

        for values, color, w in series:
            pts = [(x_at(i), y_at(v)) for i, v in enumerate(values) if math.isfinite(v)]
            if len(pts) > 1:
                draw.line(pts, fill=color, width=w)
            for px, py in pts:
                draw.ellipse([px - w, py - w, px + w, py + w], fill=color)
        return y_at

    losses = [r.loss for r in history]
    finite = [v for v in losses if math.isfinite(v)] or [threshold]
    lo, hi = min(finite + [threshold]), max(finite)
    if hi - lo > 4 * (max(finite) - min(finite)) and max(finite) > min(finite):
        lo = min(finite)  # threshold far below: zoom on the curve and say where the threshold is
    pad = 0.05 * ((hi - lo) or 1.0)
    y_loss = panel(24, 200, lo - pad, hi + pad, [(losses, (0, 0, 0), 2)], "teacher loss")
    if lo - pad <= threshold <= hi + pad:
        ty = y_loss(threshold)
        for x in range(left, right, 12):
            draw.line([(x, ty), (min(x + 6, right), ty)], fill=(120, 120, 120))
        draw.text((right - 150, ty - 12), f"stop threshold {threshold:.2f}", fill=(90, 90, 90))
    else:
        draw.text((right - 230, 8), f"stop threshold {threshold:.2f} (below the plotted range)", fill=(90, 90, 90))
    draw.text((left, 6), f"{len(history)} iterations", fill=(0, 0, 0))
    score_series = [([r.query_scores[q] for r in history], _COLORS[q % len(_COLORS)], 2) for q in range(len(queries))]
    panel(224, 330, 0.0, 1.0, score_series, "query scores P(expected) / (P(Yes) + P(No))")
    for q_index, q in enumerate(queries[:6]):
        draw.text((left, 338 + 13 * q_index), f"[{q.kind}] {q.text[:90]}", fill=_COLORS[q_index % len(_COLORS)])
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def _number(value: float, digits: int = 5) -> float | None:
    """A finite number rounded for the report; None (JSON null) for NaN or infinity."""
    return round(value, digits) if math.isfinite(value) else None


def tto_report(result, queries, config, cost: dict) -> str:
    """The loop's JSON report: stop reason, losses (null where not finite), per-query scores, time, cost."""
    first = result.history[0] if result.history else None
    last = result.history[-1] if result.history else None
    per_role: dict[str, float] = {}
    for r in result.history:
        for role, seconds in r.timings.items():
            per_role[role] = per_role.get(role, 0.0) + seconds
    return json.dumps({
        "iterations": result.iterations,
        "stop_reason": result.stop_reason,
        "first_loss": _number(first.loss) if first else None,
        "final_loss": _number(result.final_loss),
        "loss_threshold": config.loss_threshold,
        "decoded_frames": result.decoded_frames,
        "teacher_frames": result.teacher_frames,
        "queries": [{"question": q.text, "kind": q.kind, "expected": q.answer,
                     "first_score": _number(first.query_scores[i], 4),
                     "final_score": _number(last.query_scores[i], 4)} for i, q in enumerate(queries)] if last else [],
        "seconds": round(sum(r.seconds for r in result.history), 3),
        "seconds_per_role": {k: round(v, 3) for k, v in per_role.items()},
        "loss_curve": [_number(r.loss) for r in result.history],
        "cost": cost,
    }, indent=2, allow_nan=False)
