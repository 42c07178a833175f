"""Reasoner backend for diffusers' `WanTransformer3DModel` (Wan 2.2 TI2V-5B and its distilled variants).

Lets the engine run outside ComfyUI: hand it the transformer, the prompt embeddings and (optionally) a
flow-matching scheduler, and it predicts clean latents with per-token timesteps for frozen frames.
"""

from __future__ import annotations

import re

import torch

from .reasoner import shifted_sigmas

# attention (self and cross) and FFN linears of every block
DIFFUSERS_WAN_LORA_TARGETS = r"blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|blocks\.\d+\.ffn\.net\.(0\.proj|2)"

_TO_ORIGINAL = [(r"\.attn1\.", ".self_attn."), (r"\.attn2\.", ".cross_attn."), (r"\.to_q$", ".q"),
                (r"\.to_k$", ".k"), (r"\.to_v$", ".v"), (r"\.to_out\.0$", ".o"), (r"\.ffn\.net\.0\.proj$", ".ffn.0"),
                (r"\.ffn\.net\.2$", ".ffn.2")]


def diffusers_to_original_name(name: str) -> str:
    """blocks.3.attn1.to_q -> blocks.3.self_attn.q (the names ComfyUI and the original checkpoint use)."""
    for pattern, repl in _TO_ORIGINAL:
        name = re.sub(pattern, repl, name)
    return name


class DiffusersWanReasoner:
    """x0 = x - sigma * v(x, 1000 * sigma, text), with classifier-free guidance when guidance_scale != 1."""

    lora_targets = DIFFUSERS_WAN_LORA_TARGETS

    def __init__(self, transformer, prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor | None = None,
                 guidance_scale: float = 1.0, scheduler=None, shift: float = 5.0):
        self.module = transformer
        self.blocks = transformer.blocks
        self.prompt_embeds = prompt_embeds
        self.negative_prompt_embeds = negative_prompt_embeds
        self.guidance_scale = guidance_scale
        self.scheduler = scheduler
        self.shift = shift
        if guidance_scale != 1.0 and negative_prompt_embeds is None:
            raise ValueError("guidance_scale != 1 needs negative_prompt_embeds.")

    def lora_export_name(self, name: str) -> str:
        return diffusers_to_original_name(name)

    def sigmas(self, steps: int) -> torch.Tensor:
        if self.scheduler is None:
            return shifted_sigmas(steps, self.shift)
        self.scheduler.set_timesteps(steps)
        sigmas = self.scheduler.sigmas.float().cpu()
        return sigmas if sigmas[-1] == 0 else torch.cat([sigmas, sigmas.new_zeros(1)])

    def _timestep(self, x, sigma, noise_mask):
        t = float(sigma) * 1000.0
        if noise_mask is None:
            return torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
        p_t, p_h, p_w = self.module.config.patch_size
        mask = noise_mask.expand(x.shape[0], 1, *x.shape[2:])[:, 0, ::p_t, ::p_h, ::p_w]
        return (mask.flatten(1) * t).float()  # one timestep per token: 0 on frozen frames

    def denoise(self, x: torch.Tensor, sigma: float, noise_mask: torch.Tensor | None) -> torch.Tensor:
        dtype = self.module.dtype
        timestep = self._timestep(x, sigma, noise_mask)

        def velocity(embeds):
            out = self.module(hidden_states=x.to(dtype), timestep=timestep, encoder_hidden_states=embeds.to(dtype),
                              return_dict=False)[0]
            return out.float()

        v = velocity(self.prompt_embeds)
        if self.guidance_scale != 1.0:
            v_neg = velocity(self.negative_prompt_embeds)
            v = v_neg + self.guidance_scale * (v - v_neg)
        return x - float(sigma) * v
