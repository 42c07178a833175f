"""Surrogate decoders: latent [1, C, T, H, W] (model space) -> frames [F, 3, H', W'] in about [0, 1].

The loop only needs frames the teacher can read and a gradient path back to the latent, so a cheap
decoder serves: a linear latent->RGB map (free), a tiny video decoder, or the full VAE when memory allows.
`temporal_stride` says how many video frames one decoded frame stands for (it places the teacher's
timestamps on the real video's clock). A decoder that knows its frame count up front can decode just the
K frames the teacher grades (`decode_for_grading`), which keeps activations for the other frames out of
the backward pass; any decoder can also be recomputed in the backward pass instead of keeping them.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .grading import sample_frame_indices


class Decoder(Protocol):
    temporal_stride: int

    def frame_count(self, latent_frames: int) -> int | None:
        """Frames a latent of this many frames decodes to; None when only decoding tells."""

    def __call__(self, latent: torch.Tensor, indices: Sequence[int] | None = None) -> torch.Tensor:
        """All frames, or only those at `indices` (in that order)."""


def decode_for_grading(decoder: Decoder, latent: torch.Tensor, k: int,
                       recompute: bool = False) -> tuple[torch.Tensor, list[int], int]:
    """The K frames the teacher grades, their indices, and how many frames the whole video has.

    `recompute`: keep only the latent for the backward pass and decode again there, rather than holding the
    decoder's activations through the teacher's forward and backward passes (the loop's memory peak)."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(decode_for_grading, decoder, latent, k, use_reentrant=False)
    total = decoder.frame_count(latent.shape[2])
    if total is None:
        video = decoder(latent)
        indices = sample_frame_indices(video.shape[0], k)
        return video[indices], indices, video.shape[0]
    indices = sample_frame_indices(total, k)
    return decoder(latent, indices), indices, total


class LinearRGBDecoder:
    """RGB = latent . factors + bias per latent pixel, upsampled `spatial_scale` times, mapped [-1,1] -> [0,1].

    Not clamped, so pixels slightly out of range still pass gradients.
    """

    def __init__(self, factors: Sequence[Sequence[float]] | torch.Tensor, bias: Sequence[float] | None = None,
                 spatial_scale: int = 16, temporal_stride: int = 4):
        self.factors = torch.as_tensor(factors, dtype=torch.float32)  # [C, 3]
        if self.factors.ndim != 2 or self.factors.shape[1] != 3:
            raise ValueError(f"RGB factors must be [channels, 3]; got {tuple(self.factors.shape)}.")
        self.bias = torch.as_tensor(bias if bias is not None else [0.0, 0.0, 0.0], dtype=torch.float32)
        self.spatial_scale = spatial_scale
        self.temporal_stride = temporal_stride

    def frame_count(self, latent_frames: int) -> int:
        return latent_frames

    def __call__(self, latent: torch.Tensor, indices: Sequence[int] | None = None) -> torch.Tensor:
        if latent.ndim != 5 or latent.shape[1] != self.factors.shape[0]:
            raise ValueError(f"Latent must be [1, {self.factors.shape[0]}, T, H, W]; got {tuple(latent.shape)}.")
        z = latent[0].float()  # [C, T, H, W]
        if indices is not None:
            z = z[:, list(indices)]
        rgb = torch.einsum("cthw,ck->tkhw", z, self.factors.to(z.device)) + self.bias.to(z.device).view(1, 3, 1, 1)
        if self.spatial_scale != 1:
            rgb = F.interpolate(rgb, scale_factor=self.spatial_scale, mode="bilinear", align_corners=False)
        return (rgb + 1) / 2


class ModuleDecoder:
    """Any differentiable callable latent -> frames [F, 3, H, W] in [0, 1] (a tiny decoder, a full VAE).

    `frame_count` (latent frames -> video frames) and `decode_frames` (latent, indices -> those frames) are
    optional: without them every frame is decoded and the graded ones picked afterwards.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], temporal_stride: int = 1,
                 frame_count: Callable[[int], int] | None = None,
                 decode_frames: Callable[[torch.Tensor, Sequence[int]], torch.Tensor] | None = None):
        self.fn = fn
        self.temporal_stride = temporal_stride
        self._frame_count = frame_count
        self._decode_frames = decode_frames

    def frame_count(self, latent_frames: int) -> int | None:
        return self._frame_count(latent_frames) if self._frame_count is not None else None

    def __call__(self, latent: torch.Tensor, indices: Sequence[int] | None = None) -> torch.Tensor:
        if indices is not None and self._decode_frames is not None:
            frames = self._decode_frames(latent, list(indices))
        else:
            frames = self.fn(latent)
            if indices is not None:
                frames = frames[list(indices)]
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"Decoder must return frames [F, 3, H, W]; got {tuple(frames.shape)}.")
        return frames
