"""The paper's two baselines, graded and costed like TTOLoop so the three sit side by side in one graph.

Best-of-N: N ordinary samples from N seeds, each graded by the same teacher and queries; the best wins.
VLM-as-solver: the teacher rewrites the instruction into a more explicit prompt for the video model.
"""

from __future__ import annotations

import json
import time

import comfy.samplers
import comfy.utils
import torch
from comfy_api.latest import io

from ..tto_engine import best_of_n_cost, generation_cost, grade_video
from .comfy_reasoner import (
    check_instance,
    interrupted_check,
    stock_ksampler,
    wan_diffusion_model,
)
from .loop_decoders import surrogate_decoder
from .teacher_memory import load_teacher
from .teacher_nodes import image_to_frames
from .types import QUERIES, TEACHER
from .validation import check_widgets, non_empty, verdict


class BestOfNSample(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="BestOfNSample",
            display_name="Best-of-N (teacher-graded)",
            category="video reasoning/baselines",
            description="Baseline: samples N videos from seeds seed..seed+N-1 with the stock sampler, grades each "
                        "with the teacher and the queries (same K frames and lambda as TTOLoop) and returns the "
                        "best. Its report holds every score and the cost, to compare with TTOLoop at equal cost.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan video model (no LoRA needed)."),
                io.Conditioning.Input("positive", tooltip="Prompt conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (used when cfg > 1)."),
                io.Latent.Input("latent", tooltip="From Wan22ImageToVideoLatent."),
                io.Custom(TEACHER).Input("teacher", tooltip="From Load VLM Teacher."),
                io.Custom(QUERIES).Input("queries", tooltip="The same queries TTOLoop uses."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="First seed; sample i uses seed + i."),
                io.Int.Input("n", default=5, min=1, max=256, tooltip="Number of samples (the paper: 5)."),
                io.Int.Input("steps", default=4, min=1, max=100, tooltip="Sampling steps per sample."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1, tooltip="Classifier-free guidance."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="Sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="Noise schedule."),
                io.Int.Input("frames", default=24, min=1, max=256, tooltip="K frames shown to the teacher."),
                io.Float.Input("goal_weight", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="lambda: goal term weight against the mean process term."),
                io.Float.Input("video_fps", default=24.0, min=1.0, max=120.0,
                               tooltip="Frame rate of the decoded video (places the teacher's timestamps)."),
                io.Vae.Input("decoder", optional=True,
                             tooltip="Decoder for grading (as TTOLoop's loop_decoder). Empty: linear RGB map."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The best sample."),
                     io.Int.Output(display_name="best_seed"),
                     io.String.Output(display_name="scores", tooltip="Every seed's total score and loss."),
                     io.String.Output(display_name="report")],
        )

    @classmethod
    def validate_inputs(cls, sampler_name=None, scheduler=None):
        return verdict(cls, sampler_name=sampler_name, scheduler=scheduler)

    @classmethod
    def execute(cls, model, positive, negative, latent, teacher, queries, seed, n, steps, cfg, sampler_name,
                scheduler, frames, goal_weight, video_fps, decoder=None) -> io.NodeOutput:
        check_widgets(cls, locals())
        wan_diffusion_model(model)
        queries = check_instance(latent, queries)
        decoder_of_samples = surrogate_decoder(decoder, model)
        progress = comfy.utils.ProgressBar(n)
        start = time.perf_counter()
        results, best = [], None
        for i in range(n):
            interrupted_check()
            sample = stock_ksampler(model, seed + i, steps, cfg, sampler_name, scheduler, positive, negative, latent)
            load_teacher(teacher, *([decoder.patcher] if decoder is not None else []))
            with torch.no_grad():
                video = decoder_of_samples(model.model.process_latent_in(sample["samples"]))
                grade = grade_video(teacher, video, queries, frames, video_fps, goal_weight,
                                    decoder_of_samples.temporal_stride)
            loss = float(grade.loss)
            results.append({"seed": seed + i, "loss": round(loss, 5), "score": round(grade.score, 5),
                            "query_scores": [round(float(s), 4) for s in grade.scores]})
            if best is None or loss < best[0]:
                best = (loss, seed + i, sample)
            progress.update_absolute(i + 1, n)
        cost = best_of_n_cost(n, steps, cfg, time.perf_counter() - start)
        report = json.dumps({"best_seed": best[1], "best_loss": round(best[0], 5), "samples": results,
                             "cost": cost}, indent=2)
        return io.NodeOutput(best[2], best[1], json.dumps(results), report, ui={"text": [report]})


class TeacherRewritePrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TeacherRewritePrompt",
            display_name="Teacher: Rewrite Prompt (VLM-as-solver)",
            category="video reasoning/baselines",
            is_output_node=True,  # shows the rewritten prompt even before it is wired to a text encoder
            description="Baseline: the teacher reads the instruction and the first frame and rewrites the task as "
                        "an explicit prompt. Encode the output with the stock text encoder (CLIPTextEncode) and "
                        "sample as usual. An unusable reply falls back to the instruction; the report says so.",
            inputs=[
                io.Custom(TEACHER).Input("teacher", tooltip="From Load VLM Teacher."),
                io.String.Input("instruction", multiline=True, default="", tooltip="The task."),
                io.Int.Input("max_new_tokens", default=200, min=16, max=2048,
                             tooltip="Length limit of the rewritten prompt."),
                io.Image.Input("first_frame", optional=True, tooltip="The task's first frame."),
            ],
            outputs=[io.String.Output(display_name="prompt"), io.String.Output(display_name="report")],
        )

    @classmethod
    def validate_inputs(cls, instruction=None):
        return verdict(cls, non_empty("instruction", instruction))

    @classmethod
    def execute(cls, teacher, instruction, max_new_tokens, first_frame=None) -> io.NodeOutput:
        check_widgets(cls, locals())
        frame = image_to_frames(first_frame)[0] if first_frame is not None else None
        start = time.perf_counter()
        load_teacher(teacher)
        prompt, notes = teacher.rewrite_instruction(instruction, frame, max_new_tokens)
        report = json.dumps({"prompt": prompt, "notes": notes,
                             "cost": generation_cost(time.perf_counter() - start)}, indent=2)
        return io.NodeOutput(prompt, report, ui={"text": [report]})
