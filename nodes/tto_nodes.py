"""Nodes for the test-time loop: mark a Wan MODEL for LoRA training, then run the teacher-guided loop."""

from __future__ import annotations

import logging
import time

import comfy.samplers
import comfy.sd
import comfy.utils
import safetensors.torch
import torch
from comfy_api.latest import io

from ..tto_engine import (
    GRADIENT_MODES,
    LoRAAdapter,
    LoRASpec,
    TTOConfig,
    run_tto,
    tto_cost,
)
from ..tto_engine.presets import PRESETS
from .comfy_reasoner import (
    LORA_TARGET_PRESETS,
    autograd_usable,
    check_instance,
    clone_tensors,
    compute_dtype,
    interrupted_check,
    run_with_comfy_model,
    stock_ksampler,
    wan_diffusion_model,
)
from .loop_decoders import surrogate_decoder
from .model_folders import (
    CONDITIONING_FOLDER,
    conditioning_files,
    name_problem,
    resolve,
)
from .report import render_reward_curve, tto_report
from .types import LORA_ATTACHMENT, QUERIES, TEACHER
from .validation import check_widgets, verdict

MEMORY_TOOLTIP = (". ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
                  + ". fp8 weights: UNETLoader weight_dtype fp8_e4m3fn. Each recomputed block costs about one more "
                    "forward of itself. The losses and the LoRA are the same up to float rounding.")

log = logging.getLogger(__name__)


class LoRAAttach(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoRAAttach",
            display_name="Attach Trainable LoRA",
            category="video reasoning/test-time",
            description="Marks a Wan MODEL for test-time LoRA training by TTOLoop. The incoming MODEL is not "
                        "changed; the LoRA exists only inside TTOLoop, starting from zero effect each run.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan video model, e.g. Wan 2.2 TI2V-5B from UNETLoader."),
                io.Int.Input("rank", default=16, min=1, max=256, tooltip="LoRA rank (the paper uses 16)."),
                io.Float.Input("alpha", default=16.0, min=0.01, max=1024.0, step=0.01,
                               tooltip="LoRA alpha; the update is scaled by alpha / rank."),
                io.Combo.Input("targets", options=list(LORA_TARGET_PRESETS), default="attention+ffn",
                               tooltip="Which linears of every transformer block get a LoRA."),
                io.Int.Input("init_seed", default=0, min=0, max=0xFFFFFFFF,
                             tooltip="Seed of the LoRA's random down-projection init (the up-projection "
                                     "starts at zero)."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, targets=None):
        return verdict(cls, targets=targets)

    @classmethod
    def execute(cls, model, rank, alpha, targets, init_seed) -> io.NodeOutput:
        check_widgets(cls, locals())
        wan_diffusion_model(model)
        marked = model.clone()
        marked.attachments[LORA_ATTACHMENT] = LoRASpec(rank=rank, alpha=alpha,
                                                       target_modules=LORA_TARGET_PRESETS[targets], seed=init_seed)
        return io.NodeOutput(marked)


class TTOLoop(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTOLoop",
            display_name="Test-Time Teacher Loop",
            category="video reasoning/test-time",
            description="Adapts the LoRA to this one instance: predicts the clean video from the fixed noise, "
                        "lets the teacher grade it with the queries, and steps the LoRA until the loss reaches "
                        "the threshold (or max_iterations). Then samples the final video with the adapted LoRA "
                        "and the same seed, exactly as a stock KSampler would.",
            inputs=[
                io.Model.Input("model", tooltip="From Attach Trainable LoRA."),
                io.Conditioning.Input("positive", tooltip="Prompt conditioning (stock text encoder)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (used when cfg > 1)."),
                io.Latent.Input("latent", tooltip="From Wan22ImageToVideoLatent; its noise_mask keeps the "
                                                  "first frame fixed."),
                io.Custom(TEACHER).Input("teacher", tooltip="From Load VLM Teacher."),
                io.Custom(QUERIES).Input("queries", tooltip="From TeacherAnalyze and/or RewardQuery."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; the same noise is used in every iteration and the final run."),
                io.Int.Input("steps", default=4, min=1, max=100, tooltip="Sampling steps of the final run "
                             "(4 for step-distilled Wan)."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance (1.0 for distilled models: one pass per step)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="Sampler of the final run only. The loop's own predictions do not use it: "
                                       "they take Euler steps on the same noise levels (gradient_mode first: one "
                                       "step from the first level)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="Noise schedule of the final run; it also places the loop's noise levels."),
                io.Int.Input("max_iterations", default=40, min=1, max=1000,
                             tooltip="Upper bound on teacher-guided updates (the paper: 40, ~16 used on average)."),
                io.Float.Input("learning_rate", default=5e-5, min=1e-7, max=1.0, step=1e-6,
                               tooltip="AdamW learning rate of the LoRA."),
                io.Float.Input("loss_threshold", default=0.22, min=0.0, max=50.0, step=0.01,
                               tooltip="Stop once the teacher loss is at or below this (0.22 ~ 0.8 mean "
                                       "confidence in the expected answers)."),
                io.Int.Input("frames", default=24, min=1, max=256,
                             tooltip="K: frames sampled uniformly from the predicted video for the teacher."),
                io.Float.Input("goal_weight", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="lambda: goal term weight against the mean process term."),
                io.Combo.Input("gradient_mode", options=list(GRADIENT_MODES), default="first",
                               tooltip="first: gradient through the first step's clean estimate (the paper's "
                                       "choice); last: through the last step; all: through every step."),
                io.Float.Input("video_fps", default=24.0, min=1.0, max=120.0,
                               tooltip="Frame rate of the decoded video (places the teacher's timestamps)."),
                io.Vae.Input("loop_decoder", optional=True,
                             tooltip="Decoder for the loop's predictions: a tiny TAEHV (taew2_2) is fast; the "
                                     "full Wan VAE is exact but costly. Empty: the latent format's linear RGB map."),
                io.Combo.Input("memory", options=list(PRESETS), default="default", optional=True,
                               tooltip=MEMORY_TOOLTIP),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the adapted LoRA applied."),
                io.Latent.Output(display_name="latent", tooltip="The final sample (same seed)."),
                io.LoraModel.Output(display_name="lora", tooltip="The adapted LoRA (save with Save LoRA Weights)."),
                io.Image.Output(display_name="reward_curve"),
                io.String.Output(display_name="report"),
                io.Int.Output(display_name="iterations", tooltip="Iterations the loop ran (e.g. for Save LoRA "
                                                                   "Weights' steps)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, sampler_name=None, scheduler=None, gradient_mode=None, memory=None):
        return verdict(cls, sampler_name=sampler_name, scheduler=scheduler, gradient_mode=gradient_mode, memory=memory)

    @classmethod
    def execute(cls, model, positive, negative, latent, teacher, queries, seed, steps, cfg, sampler_name,
                scheduler, max_iterations, learning_rate, loss_threshold, frames, goal_weight, gradient_mode,
                video_fps, loop_decoder=None, memory="default") -> io.NodeOutput:
        check_widgets(cls, locals())
        spec = model.attachments.get(LORA_ATTACHMENT)
        if spec is None:
            raise ValueError("TTOLoop needs a MODEL from 'Attach Trainable LoRA' (LoRAAttach): connect the Wan "
                             "model through it first.")
        module = wan_diffusion_model(model)
        queries = check_instance(latent, queries)
        config = TTOConfig(max_iterations=max_iterations, learning_rate=learning_rate, loss_threshold=loss_threshold,
                           goal_weight=goal_weight, frames=frames, steps=steps, gradient_mode=gradient_mode,
                           video_fps=video_fps, checkpoint_reasoner=PRESETS[memory].checkpoint_reasoner)
        frozen = [module, teacher.model] + ([loop_decoder.first_stage_model] if loop_decoder is not None else [])
        progress = comfy.utils.ProgressBar(max_iterations)
        node_id = cls.hidden.unique_id

        def on_iteration(record):
            interrupted_check()
            progress.update_absolute(record.iteration, max_iterations)
            message = f"TTO iteration {record.iteration}/{max_iterations}: loss {record.loss:.4f}"
            log.info(message)
            _progress_text(message, node_id)

        def loop(reasoner, noise, latent_image, denoise_mask):
            with autograd_usable(*frozen):
                lora = LoRAAdapter(module, spec, compute_dtype(model))  # built once the model sits on its device
                return run_tto(reasoner, decoder, teacher, queries, lora, noise, latent_image, denoise_mask,
                               config, on_iteration)

        with torch.inference_mode(False), torch.enable_grad():  # tensors made here can be saved for backward
            decoder = surrogate_decoder(loop_decoder, model)
            companions = [teacher.patcher] + ([loop_decoder.patcher] if loop_decoder is not None else [])
            result = run_with_comfy_model(model, clone_tensors(positive), clone_tensors(negative),
                                          clone_tensors(latent), seed, steps, cfg, sampler_name, scheduler, loop,
                                          companions)
        lora_state = result.lora.to_comfy()
        adapted, _ = comfy.sd.load_lora_for_models(model, None, lora_state, 1.0, 0)
        tick = time.perf_counter()
        final = stock_ksampler(adapted, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent)
        sample_s = time.perf_counter() - tick
        cost = tto_cost(result.cost(steps, gradient_mode, cfg), steps, cfg, sample_s)
        report = tto_report(result, queries, config, cost)
        curve = render_reward_curve(result.history, queries, loss_threshold)
        return io.NodeOutput(adapted, final, lora_state, curve, report, result.iterations, ui={"text": [report]})


def _progress_text(message, node_id):
    try:
        from server import PromptServer

        PromptServer.instance.send_progress_text(message, node_id)
    except (ImportError, AttributeError):  # older hosts without progress text
        pass


class LoadConditioningFile(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadConditioningFile",
            display_name="Load Conditioning File",
            category="video reasoning/utils",
            description="Loads saved text-encoder output (a safetensors file in models/conditioning holding a "
                        "tensor 'conditioning' of shape [1, tokens, dim]) as CONDITIONING. Useful for "
                        "benchmarks with precomputed prompts and for the tiny demo, which has no umt5-xxl.",
            inputs=[io.Combo.Input("file", options=conditioning_files(),
                                   tooltip="A .safetensors file under models/conditioning.")],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def validate_inputs(cls, file=None):
        return verdict(cls, None if file is None else name_problem(file, CONDITIONING_FOLDER, conditioning_files(),
                                                                   "conditioning file"))

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        path = resolve(file, CONDITIONING_FOLDER, conditioning_files(), "conditioning file")
        try:
            tensors = safetensors.torch.load_file(path)
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise ValueError(f"'{file}' cannot be read as safetensors ({type(e).__name__}: {e}); save the "
                             f"conditioning again with safetensors.torch.save_file.") from None
        cond = tensors.get("conditioning")
        if cond is None:
            raise ValueError(f"'{file}' holds {sorted(tensors)}; expected a tensor named 'conditioning'.")
        if cond.ndim == 2:
            cond = cond[None]
        if cond.ndim != 3 or cond.shape[0] != 1 or not cond.is_floating_point():
            raise ValueError(f"'{file}': 'conditioning' is {tuple(cond.shape)} {cond.dtype}; expected a float tensor "
                             f"[1, tokens, dim] as the text encoder writes it.")
        return io.NodeOutput([[cond, {}]])
