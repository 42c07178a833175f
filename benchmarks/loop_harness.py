"""One iteration of the pack's test-time loop and one plain sample, measured, at any scale.

The iteration runs the functions TTOLoop.execute calls, in its order: `surrogate_decoder` over a TAEHV,
`run_with_comfy_model` (the model, noise, conditioning and image-to-video mask prepared exactly as a
KSampler would: the host's CFGGuider, per-token timesteps from the noise mask, training flag, PyTorch
attention; the teacher and the decoder loaded by ComfyUI together with the sampler's model), then inside it
`autograd_usable`, `LoRAAdapter(module, spec, compute_dtype(model))` and `tto_engine.run_tto` with the
memory preset's `checkpoint_reasoner`. With `memory=None` it runs the first release's loop instead through
the engine's own options (see benchmarks/memory_presets.py).
The loop runs two iterations with a backward and an optimizer step each; the second one is measured,
so the AdamW state and the last-good LoRA snapshot are live as they are in every later iteration.
The plain sample is the pack's `stock_ksampler` (the stock KSampler path), 4 steps, no LoRA.

Counted (fake or CPU tensors): the `Ledger`'s live storages by role and their peak, and FLOPs with
FlopCounterMode's formulas. Measured (`count=False`, always on CUDA, where the ledger's Python dispatch
would distort the time): seconds, and on CUDA the peak of `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch

from .accounting import GIB, Ledger, flop_formulas
from .real_models import (QWEN3_VL_4B, WAN22_TI2V_5B, TeacherSettings, World, build_taehv, build_teacher,
                          build_wan, import_host)

QUERIES = (("By the end of the video, does the yellow ball reach the red square?", "goal"),
           ("Does the yellow ball avoid every X on the board?", "process"),
           ("Does the yellow ball stay intact, without splitting or vanishing?", "process"),
           ("Does the ball move along the open corridors only?", "process"))


@dataclass(frozen=True)
class Scale:
    """The instance and model sizes. Defaults: the paper's setting on Wan 2.2 TI2V-5B + Qwen3-VL-4B."""
    frames: int = 89
    height: int = 480
    width: int = 832
    k: int = 24                   # frames shown to the teacher
    queries: int = 4
    context_tokens: int = 512     # umt5-xxl conditioning length ComfyUI pads Wan prompts to
    steps: int = 4
    wan: dict = field(default_factory=lambda: dict(WAN22_TI2V_5B))
    lora_rank: int = 16
    teacher_folder: str = str(QWEN3_VL_4B)
    teacher_overrides: dict = field(default_factory=dict)  # {"text": {...}, "vision": {...}} for small models

    @property
    def latent_shape(self) -> tuple[int, ...]:
        if (self.frames - 1) % 4 or self.height % 32 or self.width % 32:
            raise ValueError("Wan 2.2 needs 4n+1 frames and sides that are multiples of 32.")
        return (1, 48, (self.frames - 1) // 4 + 1, self.height // 16, self.width // 16)


@dataclass(frozen=True)
class LoopSettings:
    """What one run sets: TTOLoop's memory preset and the models as the workflow loads them."""
    memory: str | None = "default"      # TTOLoop's `memory` (tto_engine.presets); None: the first release's loop
    weight_dtype: str = "bf16"          # Wan weights as UNETLoader loads them (bf16 or fp8_e4m3fn)
    compute_dtype: str = "bf16"         # what ComfyUI computes Wan in on a CUDA card (fp8 weights: manual cast)
    decoder_dtype: str = "bf16"         # the TAEHV's dtype (VAELoader's choice on a CUDA card)
    teacher: TeacherSettings = TeacherSettings()


class _FirstReleaseTeacher:
    """The teacher as the first release asked it: each query in its own pass (`score(packed=False)`)."""

    def __init__(self, teacher):
        self._teacher = teacher

    def __getattr__(self, name):
        return getattr(self._teacher, name)

    def score(self, *args, **kwargs):
        return self._teacher.score(*args, packed=False, **kwargs)


class _Measured(Exception):
    """Raised from the loop's per-iteration callback once the measured iteration is done."""


class _InRole:
    """Delegates to `target`; the named methods run inside `ledger.role(role)`."""

    def __init__(self, target, ledger: Ledger, role: str, methods: tuple[str, ...]):
        self._target, self._ledger, self._role, self._methods = target, ledger, role, methods

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if name not in self._methods:
            return attr

        def in_role(*args, **kwargs):
            with self._ledger.role(self._role):
                return attr(*args, **kwargs)
        return in_role

    def __call__(self, *args, **kwargs):
        with self._ledger.role(self._role):
            return self._target(*args, **kwargs)


def _instance(pack, scale: Scale):
    """Conditioning, an image-to-video latent (frame 0 clean, as Wan22ImageToVideoLatent makes it), queries."""
    if not 1 <= scale.queries <= len(QUERIES):
        raise ValueError(f"queries must be 1 to {len(QUERIES)}, got {scale.queries}.")
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, scale.context_tokens, 4096, generator=g)
    latent = torch.zeros(scale.latent_shape)
    latent[:, :, :1] = torch.randn(latent[:, :, :1].shape, generator=g)
    mask = torch.ones(1, 1, *scale.latent_shape[2:])
    mask[:, :, 0] = 0.0
    queries = [pack.tto_engine.Query(text, kind) for text, kind in QUERIES[:scale.queries]]
    return [[cond, {}]], [[torch.zeros_like(cond), {}]], {"samples": latent, "noise_mask": mask}, queries


def _sync(world: World):
    if world.kind == "cuda":
        torch.cuda.synchronize()


def measure(world: World, settings: LoopSettings, scale: Scale = Scale(), seed: int = 0,
            count: bool | None = None) -> dict:
    """Build the models, run one measured loop iteration and one plain sample; return the figures.
    `count` (default: everywhere but CUDA) counts memory and FLOPs instead of timing the run."""
    pack = import_host(world)
    counting = world.kind != "cuda" if count is None else count
    if counting and world.kind == "cuda":
        raise ValueError("Counting on CUDA would measure the ledger, not the loop; count on fake tensors.")
    ledger = Ledger(flop_registry=flop_formulas()) if counting else None
    world.ledger = ledger
    out: dict = {"device": world.kind}
    with ledger if counting else contextlib.nullcontext():
        models = _build(pack, world, settings, scale, seed, out)
        _iteration(pack, world, settings, scale, seed, models, out)
        _sample(pack, world, scale, seed, models, out)
    if counting:
        out["iteration_over_sample"] = out["iteration_flops"] / out["sample_flops"]
    else:
        out["iteration_over_sample_s"] = out["iteration_s"] / out["sample_s"]
    if world.kind == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _role(world: World, name: str):
    return world.ledger.role(name) if world.ledger is not None else contextlib.nullcontext()


def _build(pack, world, settings, scale, seed, out):
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    with _role(world, "weights:reasoner"):
        model = build_wan(pack, world, scale.wan, settings.weight_dtype, settings.compute_dtype, seed=seed)
        model = ModelSamplingSD3().patch(model, shift=8.0)[0]  # as the shipped workflow
    with _role(world, "weights:decoder"):
        vae = build_taehv(pack, world, settings.decoder_dtype, seed=seed)
    with _role(world, "weights:teacher"):
        teacher = build_teacher(pack, world, settings.teacher, scale.teacher_folder, scale.teacher_overrides,
                                seed=seed)
    if world.ledger is not None:
        out["weights_gib"] = {r.removeprefix("weights:"): b / GIB for (r, _), b in world.ledger.live.items()
                              if r.startswith("weights:") and b}
    h, w = teacher.video_size(min(scale.k, scale.frames), scale.height, scale.width)
    vision = teacher.spec
    out["teacher_frame_size"] = [h, w]
    out["teacher_video_tokens"] = (-(-min(scale.k, scale.frames) // vision.temporal_patch_size)
                                   * (h // vision.factor) * (w // vision.factor))
    return model, vae, teacher, _instance(pack, scale)


def _iteration(pack, world, settings, scale, seed, models, out):
    """Two loop iterations through the node's code path; the second is measured."""
    cr, decoders, engine = pack.nodes.comfy_reasoner, pack.nodes.loop_decoders, pack.tto_engine
    model, vae, teacher, (positive, negative, latent, queries) = models
    ledger = world.ledger
    first_release = settings.memory is None
    if not first_release and settings.memory not in engine.presets.PRESETS:
        raise ValueError(f"Unknown memory preset {settings.memory!r}; TTOLoop has "
                         f"{', '.join(engine.presets.PRESETS)} (or None for the first release's loop).")
    spec = engine.LoRASpec(rank=scale.lora_rank, alpha=float(scale.lora_rank),
                           target_modules=cr.LORA_TARGET_PRESETS["attention+ffn"], seed=0)
    module = cr.wan_diffusion_model(model)
    # The node's TTOConfig: its inputs and the preset's checkpoint_reasoner, every other saving at its default.
    savings = (dict(checkpoint_reasoner=False, recompute_decoder=False) if first_release else
               dict(checkpoint_reasoner=engine.presets.PRESETS[settings.memory].checkpoint_reasoner))
    config = engine.TTOConfig(max_iterations=3, learning_rate=5e-5, loss_threshold=0.0, goal_weight=0.5,
                              frames=scale.k, steps=scale.steps, gradient_mode="first", video_fps=24.0, **savings)
    marks: dict = {}

    def on_iteration(record):
        _sync(world)
        with torch.profiler.record_function(f"measured iteration: mark {record.iteration}"):
            pass  # a timestamp for CPU profiles that check the ledger against the allocator
        if record.iteration == 1:
            marks["t0"] = time.perf_counter()
            if ledger is not None:
                ledger.reset_peak()
                out["start_gib"] = ledger.current / GIB  # live when the measured iteration starts
                marks["flops0"] = dict(ledger.flops)
            elif world.kind == "cuda":
                torch.cuda.reset_peak_memory_stats()
            return
        out["iteration_s"] = time.perf_counter() - marks["t0"]
        if ledger is not None:
            by_role = _since(ledger.flops, marks["flops0"])
            out["iteration_flops"], out["iteration_flops_by_role"] = sum(by_role.values()), by_role
            out["peak_gib"], out["peak_phase"] = ledger.peak / GIB, ledger.peak_label
            out["breakdown_gib"] = ledger.breakdown()
            phases = sorted(ledger.phase_peaks.items(), key=lambda kv: -kv[1])
            out["peak_by_phase_gib"] = {label: nbytes / GIB for label, nbytes in phases}
            out["most_saved_gib"] = {role: nbytes / GIB for role, nbytes in sorted(ledger.saved_peaks.items())}
        elif world.kind == "cuda":
            out["peak_gib"] = torch.cuda.max_memory_allocated() / GIB
        raise _Measured

    grader = _FirstReleaseTeacher(teacher) if first_release else teacher
    lora_dtype = torch.float32 if first_release else None

    def loop(reasoner, noise, latent_image, denoise_mask):  # TTOLoop.execute's `loop`, call for call
        with cr.autograd_usable(module, teacher.model, vae.first_stage_model):
            with world.building(), _role(world, "lora"):
                lora = engine.LoRAAdapter(module, spec, lora_dtype or cr.compute_dtype(model))
            out["lora_params"] = lora.num_parameters()
            roles = (reasoner, loop_decoder, grader) if ledger is None else (
                _InRole(reasoner, ledger, "reasoner", ("denoise",)),
                _InRole(loop_decoder, ledger, "decoder", ()),
                _InRole(grader, ledger, "teacher", ("score",)))
            try:
                engine.run_tto(*roles, queries, lora, noise, latent_image, denoise_mask, config, on_iteration)
            except _Measured:
                pass

    with torch.inference_mode(False), torch.enable_grad():
        loop_decoder = decoders.surrogate_decoder(vae, model)
        if first_release:  # every frame decoded with gradients, the graded ones picked afterwards
            loop_decoder = engine.ModuleDecoder(loop_decoder.fn, loop_decoder.temporal_stride)
        cr.run_with_comfy_model(model, cr.clone_tensors(positive), cr.clone_tensors(negative),
                                cr.clone_tensors(latent), seed, scale.steps, 1.0, "euler", "simple", loop,
                                companions=[teacher.patcher, vae.patcher])
    if "iteration_s" not in out:
        raise RuntimeError("The loop stopped before its second iteration; nothing was measured.")


def _sample(pack, world, scale, seed, models, out):
    """The plain 4-step sample through the stock KSampler path, under inference mode like a node."""
    cr = pack.nodes.comfy_reasoner
    model, _, _, (positive, negative, latent, _) = models
    flops_before = dict(world.ledger.flops) if world.ledger is not None else {}
    for _ in range(1 if world.ledger is not None else 2):  # when timing, time a warm second run
        _sync(world)
        tick = time.perf_counter()
        with torch.inference_mode():
            cr.stock_ksampler(model, seed, scale.steps, 1.0, "euler", "simple", positive, negative, latent)
        _sync(world)
        out["sample_s"] = time.perf_counter() - tick
    if world.ledger is not None:
        out["sample_flops"] = sum(_since(world.ledger.flops, flops_before).values())


def _since(now: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}
