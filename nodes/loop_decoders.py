"""Decoders for the loop's predictions: ComfyUI's own latent->RGB preview map, or a stock VAE.

With ComfyUI's tiny TAEHV decoder only the frames the teacher grades are decoded with gradients. Its
decode runs frame by frame, and each memory block remembers the previous frame's input *detached*, so
a decoded frame's gradient reaches only its own path through the decoder: running every other path
without gradients gives the same frames and the same gradient, and keeps their activations (most of the
decoder's memory at 89 frames) out of the backward pass.
"""

from __future__ import annotations

from collections import deque
from typing import Sequence

import torch
import torch.nn.functional as F

import comfy.taesd.taehv as taehv

from ..tto_engine import LinearRGBDecoder, ModuleDecoder


def linear_rgb_decoder(model) -> LinearRGBDecoder:
    """The latent format's own latent->RGB preview map (free, differentiable)."""
    fmt = model.model.latent_format
    factors = getattr(fmt, "latent_rgb_factors", None)
    if factors is None:
        raise ValueError(f"The latent format {type(fmt).__name__} has no RGB preview factors; connect a "
                         "loop_decoder VAE to TTOLoop.")
    return LinearRGBDecoder(factors, getattr(fmt, "latent_rgb_factors_bias", None), spatial_scale=16,
                            temporal_stride=4)


def taehv_frames(tae: taehv.TAEHV, latent: torch.Tensor, wanted: Sequence[int]) -> torch.Tensor:
    """TAEHV.decode(latent) [1, C, T, h, w] restricted to the output frames `wanted` (in that order), each
    computed exactly as the host computes it, with gradients only along the wanted frames' paths."""
    x = tae.process_in(latent).movedim(2, 1)[0]  # [T, C, h, w]
    blocks = list(tae.decoder)
    per_latent = 1
    for block in blocks:
        if isinstance(block, taehv.TGrow):
            per_latent *= block.stride
    keep = {w + tae.frames_to_trim for w in wanted}  # indices before the first frames are trimmed
    grad = torch.is_grad_enabled()
    out: dict[int, torch.Tensor] = {}
    memory: list[torch.Tensor | None] = [None] * len(blocks)
    # (features, next block, first output frame, frames it becomes), latent frame by latent frame, depth first
    queue = deque((x[t:t + 1], 0, t * per_latent, per_latent) for t in range(x.shape[0]))
    while queue:
        xt, i, first, count = queue.popleft()
        if i == len(blocks):
            if first in keep:
                out[first] = xt
            continue
        block = blocks[i]
        with torch.set_grad_enabled(grad and any(first <= k < first + count for k in keep)):
            if isinstance(block, taehv.MemBlock):
                past = memory[i] if memory[i] is not None else xt * 0
                memory[i] = xt.detach().clone()
                queue.appendleft((block(xt, past), i + 1, first, count))
            elif isinstance(block, taehv.TGrow):
                grown = block(xt).view(1, block.stride * xt.shape[1], *xt.shape[2:])
                share = count // block.stride
                for j, part in reversed(list(enumerate(grown.chunk(block.stride, 1)))):
                    queue.appendleft((part, i + 1, first + j * share, share))
            else:
                queue.appendleft((block(xt), i + 1, first, count))
    frames = torch.cat([out[w + tae.frames_to_trim] for w in wanted])  # [K, C', H, W]
    if tae.patch_size > 1:
        frames = F.pixel_shuffle(frames, tae.patch_size)
    return frames


def vae_decoder(vae, model) -> ModuleDecoder:
    """Differentiable decode with a stock VAE (the full Wan VAE or a tiny TAEHV one), in pixel frames [F, 3, H, W]."""
    first_stage = vae.first_stage_model

    def to_vae_space(z0):
        # process_latent_out is a per-channel affine map whose tensors were made in inference mode: read its
        # scale and offset once, then apply them differentiably. The VAE may sit on another device than the
        # reasoner (ComfyUI loads each model where it fits): the latent goes to the VAE, the frames come back.
        with torch.no_grad():
            probe = torch.zeros_like(z0[:, :, :1, :1, :1])
            offset = model.model.process_latent_out(probe)
            scale = model.model.process_latent_out(probe + 1) - offset
        weight = next(first_stage.parameters())
        return (z0 * scale + offset).to(device=weight.device, dtype=weight.dtype)

    def decode(z0):
        pixels = vae.process_output(first_stage.decode(to_vae_space(z0)).float())  # [1, 3, F, H, W]
        return pixels[0].movedim(1, 0).to(z0.device)

    if isinstance(first_stage, taehv.TAEHV) and not first_stage.parallel:
        def decode_frames(z0, indices):
            return vae.process_output(taehv_frames(first_stage, to_vae_space(z0), indices).float()).to(z0.device)

        frames_of = vae.upscale_ratio[0] if isinstance(vae.upscale_ratio, tuple) else None
        return ModuleDecoder(decode, temporal_stride=1, frame_count=frames_of, decode_frames=decode_frames)
    return ModuleDecoder(decode, temporal_stride=1)


def surrogate_decoder(vae, model):
    """The given VAE as a differentiable decoder, or the latent format's linear RGB map when None.
    Build it outside inference mode if gradients must flow through it."""
    return vae_decoder(vae, model) if vae is not None else linear_rgb_decoder(model)
