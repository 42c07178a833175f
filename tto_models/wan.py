"""Tiny Wan 2.2 TI2V-5B-shaped reasoners (a diffusers module, a ComfyUI-format file) and a conditioning stand-in.

The ComfyUI file is a plain state dict whose key names and shapes follow the original Wan checkpoint, so
stock `UNETLoader` detects it as Wan 2.2 5B; this module never imports ComfyUI.
"""

from __future__ import annotations

import pathlib
from typing import Callable

import torch

from .weights import TINY_VERSION, fill_module_, seeded_normal, write_safetensors

#: Text width of the tiny diffusers Wan transformer (its ``text_dim``).
TINY_DIFFUSERS_TEXT_DIM = 64

#: Key of the conditioning tensor in files written by :func:`write_tiny_conditioning`.
CONDITIONING_KEY = "conditioning"


def build_tiny_diffusers_wan(seed: int = 0, **overrides):
    """A tiny Wan2.2-TI2V-5B-shaped ``diffusers.WanTransformer3DModel`` (float32, eval mode).

    48 latent channels in and out, patch (1, 2, 2), 2 heads of dim 32, 2 layers, ffn 128,
    text_dim :data:`TINY_DIFFUSERS_TEXT_DIM`, freq_dim 32, no image embedder. ``overrides`` go to the
    config. Accepts timesteps of shape [B] or per-token [B, seq_len] (Wan 2.2 TI2V style).
    """
    from diffusers import WanTransformer3DModel

    config = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=48,
        out_channels=48,
        text_dim=TINY_DIFFUSERS_TEXT_DIM,
        freq_dim=32,
        ffn_dim=128,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=None,
        added_kv_proj_dim=None,
        rope_max_seq_len=1024,
    )
    config.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WanTransformer3DModel(**config)
    fill_module_(model, seed)
    return model.eval()


# ----------------------------------------------------------------------------------------------------
# ComfyUI-side files: Wan 2.2 TI2V-5B-layout diffusion model
# ----------------------------------------------------------------------------------------------------

def comfy_wan_shapes(dim: int = 128, layers: int = 2, ffn_dim: int = 256, in_dim: int = 48, out_dim: int = 48,
                     text_dim: int = 4096, freq_dim: int = 256) -> list[tuple[str, tuple[int, ...]]]:
    """Key names and shapes of an original-format Wan 2.x text/image-to-video checkpoint (no image embedder),
    as ComfyUI's ``comfy/ldm/wan/model.py`` ``WanModel`` names them. Wan 2.2 TI2V-5B: in = out = 48."""
    if dim % 128:
        raise ValueError(f"dim must be a multiple of 128 (ComfyUI derives heads = dim // 128), got {dim}")
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("patch_embedding.weight", (dim, in_dim, 1, 2, 2)),
        ("patch_embedding.bias", (dim,)),
        ("text_embedding.0.weight", (dim, text_dim)),
        ("text_embedding.0.bias", (dim,)),
        ("text_embedding.2.weight", (dim, dim)),
        ("text_embedding.2.bias", (dim,)),
        ("time_embedding.0.weight", (dim, freq_dim)),
        ("time_embedding.0.bias", (dim,)),
        ("time_embedding.2.weight", (dim, dim)),
        ("time_embedding.2.bias", (dim,)),
        ("time_projection.1.weight", (6 * dim, dim)),
        ("time_projection.1.bias", (6 * dim,)),
        ("head.head.weight", (out_dim * 4, dim)),
        ("head.head.bias", (out_dim * 4,)),
        ("head.modulation", (1, 2, dim)),
    ]
    for i in range(layers):
        b = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                shapes += [(f"{b}{attn}.{proj}.weight", (dim, dim)), (f"{b}{attn}.{proj}.bias", (dim,))]
            shapes += [(f"{b}{attn}.norm_q.weight", (dim,)), (f"{b}{attn}.norm_k.weight", (dim,))]
        shapes += [
            (f"{b}norm3.weight", (dim,)),
            (f"{b}norm3.bias", (dim,)),
            (f"{b}ffn.0.weight", (ffn_dim, dim)),
            (f"{b}ffn.0.bias", (ffn_dim,)),
            (f"{b}ffn.2.weight", (dim, ffn_dim)),
            (f"{b}ffn.2.bias", (dim,)),
            (f"{b}modulation", (1, 6, dim)),
        ]
    return shapes


def _transformer_fill(seed: int, std: float = 0.02) -> Callable[[str, tuple], torch.Tensor]:
    def make(name: str, shape: tuple) -> torch.Tensor:
        if name.endswith(".bias"):
            return torch.zeros(shape)
        if len(shape) == 1:
            return torch.ones(shape)
        return seeded_normal(shape, std, seed, name)
    return make


def write_tiny_comfy_wan(path, seed: int = 0, dim: int = 128, layers: int = 2, ffn_dim: int = 256,
                         dtype: torch.dtype = torch.float32) -> pathlib.Path:
    """Write a tiny Wan 2.2 TI2V-5B-layout diffusion model (safetensors) and return its path.

    Stock ``UNETLoader`` / ``comfy.sd.load_diffusion_model`` detects it as Wan 2.2 5B (``WAN22``,
    latent format ``Wan22``): in_dim = out_dim = 48, text_dim 4096, freq_dim 256, heads = dim // 128.
    Biases zero, norm scales one, everything else N(0, 0.02).
    """
    return write_safetensors(path, comfy_wan_shapes(dim, layers, ffn_dim), _transformer_fill(seed), dtype,
                              metadata={"tiny_models": TINY_VERSION, "seed": seed, "kind": "wan2.2-ti2v-5b-layout"})



def tiny_conditioning(seed: int = 0, tokens: int = 16, dim: int = 4096) -> torch.Tensor:
    """A deterministic stand-in for text-encoder output: float32 [1, tokens, dim], N(0, 1)."""
    return seeded_normal((1, tokens, dim), 1.0, seed, f"conditioning/{tokens}x{dim}")


def write_tiny_conditioning(path, seed: int = 0, tokens: int = 16, dim: int = 4096) -> pathlib.Path:
    """Write :func:`tiny_conditioning` to a safetensors file under the key :data:`CONDITIONING_KEY`
    (``"conditioning"``, float32 [1, tokens, dim]) and return its path."""
    cond = tiny_conditioning(seed, tokens, dim)
    return write_safetensors(path, [(CONDITIONING_KEY, tuple(cond.shape))], lambda name, shape: cond,
                              torch.float32, metadata={"tiny_models": TINY_VERSION, "seed": seed,
                                                       "kind": "conditioning"})

