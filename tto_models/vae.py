"""Tiny decoders for the Wan 2.2 latent space, as ComfyUI-format files: the full-width Wan 2.2 VAE (random)
and the 48-channel TAEHV (taew2_2 layout), both loaded by stock `VAELoader`."""

from __future__ import annotations

import pathlib

import torch

from .weights import TINY_VERSION, conv_fill, conv_shapes, write_safetensors

def _wan_vae_resblock(prefix: str, c_in: int, c_out: int) -> list:
    shapes = [(f"{prefix}.residual.0.gamma", (c_in, 1, 1, 1))]
    shapes += conv_shapes(f"{prefix}.residual.2", c_out, c_in, (3, 3, 3))
    shapes += [(f"{prefix}.residual.3.gamma", (c_out, 1, 1, 1))]
    shapes += conv_shapes(f"{prefix}.residual.6", c_out, c_out, (3, 3, 3))
    if c_in != c_out:
        shapes += conv_shapes(f"{prefix}.shortcut", c_out, c_in, (1, 1, 1))
    return shapes


def _wan_vae_attention(prefix: str, c: int) -> list:
    return ([(f"{prefix}.norm.gamma", (c, 1, 1))] + conv_shapes(f"{prefix}.to_qkv", 3 * c, c, (1, 1))
            + conv_shapes(f"{prefix}.proj", c, c, (1, 1)))


def _wan_vae_level(prefix: str, c_in: int, c_out: int, blocks: int, resample: bool, time_conv_out: int | None) -> list:
    """One encoder or decoder level: residual blocks, then (except at the last level) a spatial resample and
    possibly a temporal one."""
    shapes = []
    for j in range(blocks):
        shapes += _wan_vae_resblock(f"{prefix}.{j}", c_in if j == 0 else c_out, c_out)
    if resample:
        shapes += conv_shapes(f"{prefix}.{blocks}.resample.1", c_out, c_out, (3, 3))
        if time_conv_out is not None:
            shapes += conv_shapes(f"{prefix}.{blocks}.time_conv", time_conv_out, c_out, (3, 1, 1))
    return shapes


def wan22_vae_shapes(dim: int = 160, dec_dim: int = 256, z_dim: int = 48) -> list[tuple[str, tuple[int, ...]]]:
    """Key names and shapes of the Wan 2.2 VAE state dict (the 48-channel, 16x16x4 one), as ComfyUI's
    ``comfy/ldm/wan/vae2_2.py`` builds it (widths hard-coded there: encoder 160, decoder 256,
    multipliers 1, 2, 4, 4, two residual blocks per level, temporal downsampling at levels 1 and 2)."""
    mult = [1, 2, 4, 4]
    t_down = [False, True, True]
    shapes: list = []
    # encoder (input: 3 channels patchified 2x2 -> 12)
    dims = [dim * m for m in [1] + mult]
    shapes += conv_shapes("encoder.conv1", dims[0], 12, (3, 3, 3))
    for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(mult) - 1
        shapes += _wan_vae_level(f"encoder.downsamples.{i}.downsamples", c_in, c_out, blocks=2, resample=not last,
                                 time_conv_out=c_out if not last and t_down[i] else None)
    c = dims[-1]
    shapes += _wan_vae_resblock("encoder.middle.0", c, c) + _wan_vae_attention("encoder.middle.1", c)
    shapes += _wan_vae_resblock("encoder.middle.2", c, c)
    shapes += [("encoder.head.0.gamma", (c, 1, 1, 1))] + conv_shapes("encoder.head.2", 2 * z_dim, c, (3, 3, 3))
    shapes += conv_shapes("conv1", 2 * z_dim, 2 * z_dim, (1, 1, 1))
    shapes += conv_shapes("conv2", z_dim, z_dim, (1, 1, 1))
    # decoder
    dims = [dec_dim * m for m in [mult[-1]] + mult[::-1]]
    t_up = t_down[::-1]
    shapes += conv_shapes("decoder.conv1", dims[0], z_dim, (3, 3, 3))
    c = dims[0]
    shapes += _wan_vae_resblock("decoder.middle.0", c, c) + _wan_vae_attention("decoder.middle.1", c)
    shapes += _wan_vae_resblock("decoder.middle.2", c, c)
    for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(mult) - 1
        shapes += _wan_vae_level(f"decoder.upsamples.{i}.upsamples", c_in, c_out, blocks=3, resample=not last,
                                 time_conv_out=2 * c_out if not last and t_up[i] else None)
    shapes += [("decoder.head.0.gamma", (dims[-1], 1, 1, 1))]
    shapes += conv_shapes("decoder.head.2", 12, dims[-1], (3, 3, 3))
    return shapes



def _wan_vae_gain(name: str) -> float:
    if name.startswith("decoder.head.2."):
        return 0.5      # decoded pixels in [-1, 1] mostly, so the clamp in ComfyUI rarely saturates
    if ".residual.6." in name or name.endswith("proj.weight"):
        return 0.5      # tame the growth of the residual stream
    return 1.0


def write_tiny_wan22_vae(path, seed: int = 0) -> pathlib.Path:
    """Write a random full-width Wan 2.2 VAE (float16 safetensors, ~705 M parameters, ~1.4 GB).

    Stock ``VAELoader`` / ``comfy.sd.VAE(sd=...)`` builds the Wan 2.2 VAE from it (detected by
    ``decoder.upsamples.0.upsamples.0.residual.2.weight``): it encodes (unlike the TAEHV) and decodes.
    Weights are N(0, gain^2 / fan_in), generated and written one tensor at a time.
    """
    return write_safetensors(path, wan22_vae_shapes(), conv_fill(seed, _wan_vae_gain), torch.float16,
                              metadata={"tiny_models": TINY_VERSION, "seed": seed, "kind": "wan2.2-vae"})



def _taehv_memblock(prefix: str, c_in: int, c_out: int) -> list:
    shapes = conv_shapes(f"{prefix}.conv.0", c_out, 2 * c_in, (3, 3))
    shapes += conv_shapes(f"{prefix}.conv.2", c_out, c_out, (3, 3))
    shapes += conv_shapes(f"{prefix}.conv.4", c_out, c_out, (3, 3))
    if c_in != c_out:
        shapes += conv_shapes(f"{prefix}.skip", c_out, c_in, (1, 1), bias=False)
    return shapes


def taehv_shapes(latent_channels: int = 48, patch_size: int = 2) -> list[tuple[str, tuple[int, ...]]]:
    """Key names and shapes of a TAEHV state dict as ComfyUI's ``comfy/taesd/taehv.py`` lays it out
    (``encoder.N`` / ``decoder.N`` Sequential indices). 48 latent channels = Wan 2.2 (2x2 pixel patches)."""
    img = 3 * patch_size * patch_size
    shapes: list = []
    # encoder: conv, act, [TPool, strided conv, 3 MemBlocks] x 3, conv
    shapes += conv_shapes("encoder.0", 64, img, (3, 3))
    idx = 2
    for stride in (2, 2, 1):
        shapes += conv_shapes(f"encoder.{idx}.conv", 64, 64 * stride, (1, 1), bias=False)
        shapes += conv_shapes(f"encoder.{idx + 1}", 64, 64, (3, 3), bias=False)
        for k in range(3):
            shapes += _taehv_memblock(f"encoder.{idx + 2 + k}", 64, 64)
        idx += 5
    shapes += conv_shapes(f"encoder.{idx}", latent_channels, 64, (3, 3))
    # decoder: Clamp, conv, act, [3 MemBlocks, Upsample, TGrow, conv] x 3, act, conv
    n_f = [256, 128, 64, 64]
    shapes += conv_shapes("decoder.1", n_f[0], latent_channels, (3, 3))
    idx = 3
    for level, t_stride in enumerate((1, 2, 2)):
        c = n_f[level]
        for k in range(3):
            shapes += _taehv_memblock(f"decoder.{idx + k}", c, c)
        shapes += conv_shapes(f"decoder.{idx + 4}.conv", c * t_stride, c, (1, 1), bias=False)
        shapes += conv_shapes(f"decoder.{idx + 5}", n_f[level + 1], c, (3, 3), bias=False)
        idx += 6
    shapes += conv_shapes(f"decoder.{idx + 1}", img, n_f[3], (3, 3))
    return shapes


def _taehv_gain(name: str) -> float:
    if name == "decoder.22.weight":
        return 0.2      # output = 0.5 + small: frames stay inside [0, 1] (ComfyUI does not clamp them)
    if ".conv.4." in name:
        return 0.5      # last conv of each MemBlock: keep the residual stream from growing
    return 1.0


def write_tiny_taehv(path, seed: int = 0) -> pathlib.Path:
    """Write a random 48-channel TAEHV (Wan 2.2 tiny decoder, float16 safetensors) and return its path.

    Stock ``VAELoader`` / ``comfy.sd.VAE(sd=...)`` detects it by ``decoder.22.bias`` with
    ``decoder.1.weight`` taking 48 channels, and decodes [B, 48, T, h, w] latents to
    [B, 4T-3, 16h, 16w, 3] frames (ComfyUI: decode only, no clamp, so the output conv carries a 0.5 bias
    and small weights to keep frames inside [0, 1]).
    """
    base = conv_fill(seed, _taehv_gain)

    def make(name: str, shape: tuple) -> torch.Tensor:
        if name == "decoder.22.bias":
            return torch.full(shape, 0.5)
        return base(name, shape)

    return write_safetensors(path, taehv_shapes(), make, torch.float16,
                              metadata={"tiny_models": TINY_VERSION, "seed": seed, "kind": "taehv-wan2.2"})

