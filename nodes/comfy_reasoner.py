"""ComfyUI adapters for the engine's roles: a Wan MODEL as the reasoner, a VAE or latent format as decoder.

The loop runs inside a `comfy.samplers.Sampler`, driven through the stock guider, so conditioning, cfg,
the image-to-video noise mask and noise scaling are prepared exactly as for a stock KSampler run.
"""

from __future__ import annotations

import contextlib

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers

from ..tto_engine import LinearRGBDecoder, ModuleDecoder, require_queries

# Attention (self and cross) and FFN linears of every block, in ComfyUI's (the original) Wan names.
COMFY_WAN_LORA_TARGETS = r"blocks\.\d+\.(self_attn|cross_attn)\.(q|k|v|o)|blocks\.\d+\.ffn\.(0|2)"
LORA_TARGET_PRESETS = {
    "attention+ffn": COMFY_WAN_LORA_TARGETS,
    "attention": r"blocks\.\d+\.(self_attn|cross_attn)\.(q|k|v|o)",
    "self-attention": r"blocks\.\d+\.self_attn\.(q|k|v|o)",
}


def wan_diffusion_model(model):
    """The Wan network inside a MODEL, or a ValueError that says what was connected instead."""
    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    if inner is None or type(inner).__module__ != "comfy.ldm.wan.model":
        kind = type(getattr(model, "model", model)).__name__
        raise ValueError(f"This node needs a Wan video model (e.g. Wan 2.2 TI2V-5B from UNETLoader); "
                         f"the connected MODEL is a '{kind}'.")
    return inner


def _alias(t: torch.Tensor) -> torch.Tensor:
    """A normal tensor sharing an inference tensor's memory (no copy)."""
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    return out.set_(t.untyped_storage(), t.storage_offset(), t.size(), t.stride())


@contextlib.contextmanager
def autograd_usable(*modules: torch.nn.Module):
    """Weights loaded under ComfyUI's inference mode cannot be saved for backward. Swap in zero-copy
    aliases for the duration of the block, then put the original tensors back."""
    swapped = []
    try:
        for module in modules:
            for m in module.modules():
                for store in (m._parameters, m._buffers):
                    for name, t in list(store.items()):
                        if t is not None and t.is_inference():
                            swapped.append((store, name, t))
                            alias = _alias(t)
                            store[name] = torch.nn.Parameter(alias, requires_grad=False) if store is m._parameters \
                                else alias
        yield
    finally:
        for store, name, t in reversed(swapped):
            store[name] = t


def clone_tensors(obj):
    """Deep-copy tensors out of inference mode (conditioning lists, latent dicts)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: clone_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tensors(v) for v in obj)
    return obj


class ComfyWanReasoner:
    """Engine reasoner over ComfyUI's wrapped model: x0 from the stock cfg + inpaint path."""

    lora_targets = COMFY_WAN_LORA_TARGETS

    def __init__(self, model_wrap, module, sigmas, noise, latent_image, extra_args):
        self.module = module
        self._sigmas = sigmas.detach().float().cpu()
        self._x0 = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
        self._x0.latent_image = latent_image
        self._x0.noise = noise
        self._extra = {k: v for k, v in extra_args.items() if k != "denoise_mask"}

    def lora_export_name(self, name: str) -> str:
        return name  # ComfyUI keeps the original checkpoint names

    def sigmas(self, steps: int) -> torch.Tensor:
        if steps != len(self._sigmas) - 1:
            raise ValueError(f"The sampler was prepared for {len(self._sigmas) - 1} steps, not {steps}.")
        return self._sigmas

    def denoise(self, x, sigma, noise_mask):
        s = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)
        return self._x0(x, s, denoise_mask=noise_mask, **self._extra)


class _LoopSampler(comfy.samplers.Sampler):
    """Hands the prepared model, noise and latent to `run(reasoner, noise, latent_image, denoise_mask)`."""

    def __init__(self, run, module):
        self.run, self.module, self.result = run, module, None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        reasoner = ComfyWanReasoner(model_wrap, self.module, sigmas, noise, latent_image, extra_args)
        self.result = self.run(reasoner, noise, latent_image, denoise_mask)
        return latent_image


def run_with_comfy_model(model, positive, negative, latent: dict, seed: int, steps: int, cfg: float,
                         sampler_name: str, scheduler: str, run):
    """Prepare everything as `common_ksampler` would (same noise, conds, mask, sigmas) and call `run`.

    Must be called with autograd usable (outside inference mode). Returns what `run` returned.
    """
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    noise_mask = latent.get("noise_mask")
    sampler = _LoopSampler(run, wan_diffusion_model(model))
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=noise_mask, seed=seed)
    return sampler.result


def stock_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent) -> dict:
    """The stock KSampler code path itself, so a downstream KSampler with the same seed gives the same latent."""
    import nodes as comfy_nodes  # ComfyUI's top-level nodes.py (this pack imports its own modules relatively)

    return comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                       latent)[0]


# ------------------------------------------------------------------------------------------------
# Decoders for the loop


def linear_rgb_decoder(model) -> LinearRGBDecoder:
    """The latent format's own latent->RGB preview map (free, differentiable)."""
    fmt = model.model.latent_format
    factors = getattr(fmt, "latent_rgb_factors", None)
    if factors is None:
        raise ValueError(f"The latent format {type(fmt).__name__} has no RGB preview factors; connect a "
                         "loop_decoder VAE to TTOLoop.")
    return LinearRGBDecoder(factors, getattr(fmt, "latent_rgb_factors_bias", None), spatial_scale=16,
                            temporal_stride=4)


def vae_decoder(vae, model) -> ModuleDecoder:
    """Differentiable decode with a stock VAE (the full Wan VAE or a tiny TAEHV one)."""
    first_stage = vae.first_stage_model

    def decode(z0):
        # process_latent_out is a per-channel affine map whose tensors were made in inference mode:
        # read its scale and offset once, then apply them differentiably.
        with torch.no_grad():
            probe = torch.zeros_like(z0[:, :, :1, :1, :1])
            offset = model.model.process_latent_out(probe)
            scale = model.model.process_latent_out(probe + 1) - offset
        raw = z0 * scale + offset
        dtype = next(first_stage.parameters()).dtype
        pixels = vae.process_output(first_stage.decode(raw.to(dtype)).float())  # [1, 3, F, H, W]
        return pixels[0].movedim(1, 0)  # [F, 3, H, W]

    return ModuleDecoder(decode, temporal_stride=1)


def surrogate_decoder(vae, model):
    """The given VAE as a differentiable decoder, or the latent format's linear RGB map when None.
    Build it outside inference mode if gradients must flow through it."""
    return vae_decoder(vae, model) if vae is not None else linear_rgb_decoder(model)


def check_instance(latent: dict, queries) -> list:
    """One Wan video instance and a non-empty query list, or a ValueError that says how to fix it."""
    queries = require_queries(queries)
    samples = latent["samples"]
    if samples.ndim != 5:
        raise ValueError(f"This node needs a video latent [batch, channels, frames, height, width]; got "
                         f"{tuple(samples.shape)} (use Wan22ImageToVideoLatent).")
    if samples.shape[0] != 1:
        raise ValueError(f"One instance at a time: the latent holds a batch of {samples.shape[0]}. Set "
                         "batch_size to 1 (queue several prompts for several seeds).")
    return queries


def interrupted_check():
    comfy.model_management.throw_exception_if_processing_interrupted()
