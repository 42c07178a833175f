"""Pixels to vision-tower patches in torch, as the checkpoint's own Qwen-VL processor does it, so gradients
reach the pixels. Sizes, normalisation and patch order follow the processor configs saved with the
checkpoint; tests compare the result with the transformers processor itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoints import read_json

# Processor defaults per family, used when the checkpoint's configs omit a value.
PROCESSOR_DEFAULTS = {
    "qwen3_vl": dict(patch_size=16, temporal_patch_size=2, merge_size=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                     video_min_pixels=128 * 32 * 32, video_max_pixels=768 * 32 * 32,
                     image_min_pixels=56 * 56, image_max_pixels=28 * 28 * 1280),
    "qwen2_5_vl": dict(patch_size=14, temporal_patch_size=2, merge_size=2,
                       mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
                       video_min_pixels=128 * 28 * 28, video_max_pixels=768 * 28 * 28,
                       image_min_pixels=56 * 56, image_max_pixels=28 * 28 * 1280),
}


@dataclass(frozen=True)
class VisionSpec:
    """How the checkpoint's processor turns pixels into patches (read from its processor configs)."""
    family: str
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    mean: tuple
    std: tuple
    video_min_pixels: int
    video_max_pixels: int
    image_min_pixels: int
    image_max_pixels: int

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_folder(cls, folder: Path, family: str) -> "VisionSpec":
        d = dict(PROCESSOR_DEFAULTS[family])

        def read(name):
            p = folder / name
            return read_json(p) if p.exists() else {}

        proc = read("processor_config.json")
        image_cfg = read("preprocessor_config.json") or proc.get("image_processor", {})
        video_cfg = read("video_preprocessor_config.json") or proc.get("video_processor", {}) or image_cfg

        def pixels(cfg, lo, hi):
            size = cfg.get("size") or {}
            d[lo] = int(cfg.get("min_pixels", size.get("shortest_edge", d[lo])))
            d[hi] = int(cfg.get("max_pixels", size.get("longest_edge", d[hi])))

        pixels(image_cfg, "image_min_pixels", "image_max_pixels")
        pixels(video_cfg, "video_min_pixels", "video_max_pixels")
        for key in ("patch_size", "temporal_patch_size", "merge_size"):
            d[key] = int(video_cfg.get(key, image_cfg.get(key, d[key])))
        d["mean"] = tuple(video_cfg.get("image_mean", d["mean"]))
        d["std"] = tuple(video_cfg.get("image_std", d["std"]))
        return cls(family=family, **d)


def _resize_per_frame(h, w, factor, min_pixels, max_pixels):
    """Qwen2-VL rule: sides multiples of `factor`, pixels per frame within [min, max], aspect kept."""
    if max(h, w) / min(h, w) > 200:
        raise ValueError(f"Aspect ratio {max(h, w) / min(h, w):.0f} is too extreme for the teacher (max 200).")
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def _resize_whole_clip(t, h, w, factor, temporal, min_pixels, max_pixels):
    """Qwen3-VL rule: the pixel budget covers the whole clip (frames x height x width)."""
    if h < factor or w < factor:
        scale = max(factor / h, factor / w)
        h, w = int(h * scale), int(w * scale)
    if max(h, w) / min(h, w) > 200:
        raise ValueError(f"Aspect ratio {max(h, w) / min(h, w):.0f} is too extreme for the teacher (max 200).")
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    tb = round(t / temporal) * temporal
    if tb * hb * wb > max_pixels:
        beta = math.sqrt(t * h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif tb * hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (t * h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def video_size(spec: VisionSpec, t: int, h: int, w: int, max_pixels: int) -> tuple[int, int]:
    """Height and width the frames of a t-frame clip are resized to."""
    if spec.family == "qwen3_vl":
        return _resize_whole_clip(t, h, w, spec.factor, spec.temporal_patch_size, spec.video_min_pixels, max_pixels)
    return _resize_per_frame(h, w, spec.factor, spec.video_min_pixels, max_pixels)


def image_size(spec: VisionSpec, h: int, w: int) -> tuple[int, int]:
    return _resize_per_frame(h, w, spec.factor, spec.image_min_pixels, spec.image_max_pixels)


def patchify(spec: VisionSpec, frames: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, 3, H, W] in [0, 1] -> (patches [N, 3*tp*p*p] in the processor's order, grid_thw [1, 3])."""
    s = spec
    frames = frames.to(torch.promote_types(frames.dtype, torch.float32))
    if tuple(frames.shape[-2:]) != tuple(size):
        frames = F.interpolate(frames, size=size, mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(s.mean, device=frames.device, dtype=frames.dtype).view(1, 3, 1, 1)
    std = torch.tensor(s.std, device=frames.device, dtype=frames.dtype).view(1, 3, 1, 1)
    frames = (frames - mean) / std
    if pad := -frames.shape[0] % s.temporal_patch_size:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    t, c, h, w = frames.shape
    p, m, tp = s.patch_size, s.merge_size, s.temporal_patch_size
    gt, gh, gw = t // tp, h // p, w // p
    x = frames.view(gt, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # merge-window order, then (C, tp, p, p) within a patch
    patches = x.reshape(gt * gh * gw, c * tp * p * p)
    return patches, torch.tensor([[gt, gh, gw]], device=frames.device)
