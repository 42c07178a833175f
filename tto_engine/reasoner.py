"""The reasoner role: a flow-matching video model that predicts the clean latent, and sampling with it.

Conventions (rectified flow, as Wan uses): x_sigma = (1 - sigma) * x0 + sigma * eps, velocity v = eps - x0,
so the clean-latent estimate is x0 = x - sigma * v; at sigma = 1 it is eps - v(eps). Latents are
[B, C, T, H, W] in the model's own (normalised) space. A `noise_mask` of the latent's shape (or broadcastable
to it) is 1 where the model generates and 0 where the latent stays clean (image-to-video: the first frame).
"""

from __future__ import annotations

from typing import Literal, Protocol, Sequence

import torch
from torch import nn

GradientMode = Literal["first", "last", "all"]
GRADIENT_MODES = ("first", "last", "all")


class Reasoner(Protocol):
    """What the loop needs from a video model. Backends: ComfyUI Wan (the pack) and diffusers Wan."""

    module: nn.Module                  # the network the LoRA is attached to
    blocks: nn.ModuleList              # its transformer blocks (the unit of activation checkpointing)
    lora_targets: str                  # peft target_modules regex for its attention and FFN linears

    def lora_export_name(self, name: str) -> str:
        """Module name -> the original checkpoint's name (ComfyUI LoRA keys use those)."""

    def sigmas(self, steps: int) -> torch.Tensor:
        """Descending noise levels for `steps` steps, starting at 1 and ending at 0 (steps + 1 values)."""

    def denoise(self, x: torch.Tensor, sigma: float, noise_mask: torch.Tensor | None) -> torch.Tensor:
        """Clean-latent estimate x0 at noise level sigma (guidance, if any, applied inside)."""


def _keep_clean(x, clean, noise_mask):
    if noise_mask is None:
        return x
    return noise_mask * x + (1 - noise_mask) * clean


def start_latent(noise, clean, noise_mask, sigma0: float):
    """The latent at the first noise level (flow matching: mix of noise and the clean/initial latent)."""
    x = sigma0 * noise + (1 - sigma0) * clean
    return _keep_clean(x, clean, noise_mask)


def predict_clean_latent(reasoner: Reasoner, noise: torch.Tensor, clean: torch.Tensor,
                         noise_mask: torch.Tensor | None, sigmas: Sequence[float] | torch.Tensor,
                         gradient_mode: GradientMode = "first") -> torch.Tensor:
    """The loop's x0 estimate, differentiable according to `gradient_mode`.

    - "first": one model call at the first noise level, x0 = eps - v(eps) (the paper's default);
    - "last": the sampler runs to its last step without gradients, the last call keeps them;
    - "all": every step keeps gradients (memory grows with the number of steps).
    Frames where noise_mask is 0 stay equal to `clean` throughout.
    """
    sigmas = [float(s) for s in sigmas]
    if gradient_mode not in GRADIENT_MODES:
        raise ValueError(f"gradient_mode must be one of {GRADIENT_MODES}, got {gradient_mode!r}.")
    x = start_latent(noise, clean, noise_mask, sigmas[0])
    if gradient_mode == "first":
        return _keep_clean(reasoner.denoise(x, sigmas[0], noise_mask), clean, noise_mask)
    last = len(sigmas) - 2
    x0 = None
    for i in range(last + 1):
        track = gradient_mode == "all" or i == last
        with torch.set_grad_enabled(track and torch.is_grad_enabled()):
            x0 = _keep_clean(reasoner.denoise(x, sigmas[i], noise_mask), clean, noise_mask)
            if i < last:
                x = euler_step(x, x0, sigmas[i], sigmas[i + 1])
                x = _keep_clean(x, clean, noise_mask)
                if not track:
                    x = x.detach()
    return x0


def euler_step(x, x0, sigma, sigma_next):
    """Move along the straight flow from noise level sigma to sigma_next given the x0 estimate."""
    ratio = sigma_next / sigma
    return ratio * x + (1 - ratio) * x0


@torch.no_grad()
def sample(reasoner: Reasoner, noise, clean, noise_mask, steps: int) -> torch.Tensor:
    """Plain few-step Euler sampling (no gradients): the final video once the LoRA is adapted."""
    return predict_clean_latent(reasoner, noise, clean, noise_mask, reasoner.sigmas(steps), "all")


def shifted_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Flow-matching schedule t -> shift*t / (1 + (shift-1)*t) on a uniform grid from 1 to 0."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def draw_noise(shape, seed: int) -> torch.Tensor:
    """Noise drawn once per instance; the same stream as ComfyUI's prepare_noise (CPU generator, float32)."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
