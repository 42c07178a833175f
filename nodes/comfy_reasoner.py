"""ComfyUI adapters for the engine's roles: a Wan MODEL as the reasoner, a VAE or latent format as decoder.

The loop runs inside a `comfy.samplers.Sampler`, driven through the stock guider, so conditioning, cfg,
the image-to-video noise mask and noise scaling are prepared exactly as for a stock KSampler run.
"""

from __future__ import annotations

import contextlib
import functools

import torch

import comfy.ldm.modules.attention
import comfy.model_management
import comfy.sample
import comfy.samplers

from ..tto_engine import require_queries

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
        self.blocks = module.blocks
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
    """Hands the prepared model, noise and latent to `run(reasoner, noise, latent_image, denoise_mask)`, once
    `load` has put every model the loop needs on the compute device."""

    def __init__(self, run, module, load):
        self.run, self.module, self.load, self.result = run, module, load, None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        self.load()
        reasoner = ComfyWanReasoner(model_wrap, self.module, sigmas, noise, latent_image, extra_args)
        self.result = self.run(reasoner, noise, latent_image, denoise_mask)
        return latent_image


def run_with_comfy_model(model, positive, negative, latent: dict, seed: int, steps: int, cfg: float,
                         sampler_name: str, scheduler: str, run, companions=()):
    """Prepare everything as `common_ksampler` would (same noise, conds, mask, sigmas) and call `run`.

    `companions` are the other models the loop uses (ModelPatchers: the teacher, the loop decoder). They are
    loaded fully together with the reasoner once sampling has loaded it, so none of them is moved away while
    the loop runs. Must be called with autograd usable (outside inference mode). Returns what `run` returned.
    """
    require_static_weights(model)
    loop_model = model.clone()  # the differentiable attention stays on this clone, the caller's MODEL is untouched
    options = loop_model.model_options.setdefault("transformer_options", {})
    options["optimized_attention_override"] = differentiable_attention
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    noise_mask = latent.get("noise_mask")
    load = functools.partial(comfy.model_management.load_models_gpu, [loop_model, *companions],
                             force_full_load=True)
    sampler = _LoopSampler(run, wan_diffusion_model(model), load)
    guider = comfy.samplers.CFGGuider(loop_model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    with training_mode():
        guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=noise_mask, seed=seed)
    return sampler.result


def differentiable_attention(attention, *args, **kwargs):
    """Attention through PyTorch's own kernels, whatever the host was started with: SageAttention and other
    fused kernels have no backward pass."""
    return comfy.ldm.modules.attention.attention_pytorch(*args, **kwargs)


@contextlib.contextmanager
def training_mode():
    """Newer hosts take fused, non-differentiable paths (RoPE, int8 linears) unless
    `comfy.model_management.in_training` is set, and the flag must hold through the backward pass too
    (checkpointed blocks recompute their forward there). Hosts without the flag ignore it."""
    host = comfy.model_management
    had, before = hasattr(host, "in_training"), getattr(host, "in_training", None)
    host.in_training = True
    try:
        yield
    finally:
        if had:
            host.in_training = before
        else:
            del host.in_training


def require_static_weights(model) -> None:
    """Newer hosts' dynamic VRAM streams weights through shared, reusable buffers; the weights autograd keeps
    for the backward pass could be overwritten before it runs."""
    is_dynamic = getattr(model, "is_dynamic", None)
    if callable(is_dynamic) and is_dynamic():
        raise ValueError("TTOLoop trains through the model, which ComfyUI's dynamic VRAM mode does not support "
                         "(its weights live in reusable buffers). Start ComfyUI with --disable-dynamic-vram.")


def compute_dtype(model) -> torch.dtype:
    """The dtype the model computes in (fp8 weights compute in bf16 or fp16)."""
    return model.model.manual_cast_dtype or model.model.get_dtype()


def stock_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent) -> dict:
    """The stock KSampler code path itself, so a downstream KSampler with the same seed gives the same latent."""
    import nodes as comfy_nodes  # ComfyUI's top-level nodes.py (this pack imports its own modules relatively)

    return comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                       latent)[0]


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
