"""Nodes around the teacher VLM: load it, let it write queries, add your own queries, grade a video."""

from __future__ import annotations

import json
import time
from pathlib import Path

import comfy.model_management
import torch
from comfy_api.latest import io

from ..tto_engine import Query, VLMTeacher, generation_cost, grade_video
from ..tto_engine.checkpoints import check_vlm_folder
from ..tto_engine.presets import TEACHER_VIDEO_PIXELS
from ..tto_engine.teacher import SUPPORTED_FAMILIES
from .model_folders import LLM_FOLDER, name_problem, resolve, vlm_folders
from .teacher_memory import load_teacher, manage
from .types import QUERIES, TEACHER
from .validation import check_widgets, non_empty, verdict


def image_to_frames(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [N, H, W, 3] -> engine frames [N, 3, H, W]."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected video frames as an IMAGE batch [frames, height, width, 3]; got "
                         f"{tuple(images.shape)}. (An RGBA image? Drop the alpha channel first.)")
    return images.movedim(-1, 1)


_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MIN_VIDEO_PIXELS = 32 * 32 * 2  # one merged patch of two frames: the smallest clip the teacher can read


def pixel_budget_problem(max_video_pixels) -> str | None:
    if max_video_pixels is not None and 0 < max_video_pixels < MIN_VIDEO_PIXELS:
        return (f"max_video_pixels {max_video_pixels} is too small for the teacher to see anything: use 0 (the "
                f"checkpoint's own budget) or at least {MIN_VIDEO_PIXELS}.")
    return None


def teacher_folder(model_name) -> str:
    return resolve(model_name, LLM_FOLDER, vlm_folders(), "VLM folder")


class VLMTeacherLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VLMTeacherLoader",
            display_name="Load VLM Teacher",
            category="video reasoning/teacher",
            description="Loads a Qwen3-VL or Qwen2.5-VL checkpoint folder from models/LLM (for example "
                        "models/LLM/Qwen3-VL-4B-Instruct with config.json, *.safetensors and the tokenizer "
                        "files). Local files only; nothing is downloaded.",
            inputs=[
                io.Combo.Input("model_name", options=vlm_folders(),
                               tooltip="A checkpoint folder under models/LLM."),
                io.Combo.Input("dtype", options=list(_DTYPES), default="auto",
                               tooltip="Weight precision. auto: bf16 on GPU, fp32 on CPU."),
                io.Boolean.Input("gradient_checkpointing", default=True,
                                 tooltip="Recompute the teacher's activations during TTOLoop's backward pass when "
                                         "they would be large (real video sizes): much less memory, about a third "
                                         "more teacher compute. Small clips are never recomputed."),
                io.Int.Input("max_video_pixels", default=TEACHER_VIDEO_PIXELS, min=0, max=1 << 30, step=1024,
                             tooltip="Most pixels the teacher reads of a graded clip (frames x height x width for "
                                     "Qwen3-VL, per frame for Qwen2.5-VL); it caps the checkpoint's own budget, "
                                     "and larger frames are scaled down. The default reads 24 frames of 480x832 "
                                     "at 384x672, which keeps a TTOLoop iteration below one plain sample in "
                                     "compute. 0: the checkpoint's own budget; otherwise at least "
                                     f"{MIN_VIDEO_PIXELS}."),
            ],
            outputs=[io.Custom(TEACHER).Output(display_name="teacher")],
        )

    @classmethod
    def validate_inputs(cls, model_name=None, dtype=None, max_video_pixels=None):
        name = None if model_name is None else name_problem(model_name, LLM_FOLDER, vlm_folders(), "VLM folder")
        if model_name is not None and name is None:
            try:
                check_vlm_folder(Path(teacher_folder(model_name)), SUPPORTED_FAMILIES)
            except ValueError as e:
                name = str(e)
        return verdict(cls, name, pixel_budget_problem(max_video_pixels), dtype=dtype,
                       max_video_pixels=max_video_pixels)

    @classmethod
    def execute(cls, model_name, dtype, gradient_checkpointing, max_video_pixels) -> io.NodeOutput:
        path = teacher_folder(model_name)
        check_widgets(cls, locals())
        if problem := pixel_budget_problem(max_video_pixels):
            raise ValueError(problem)
        device = comfy.model_management.get_torch_device()
        chosen = _DTYPES[dtype] or (torch.float32 if device.type == "cpu" else torch.bfloat16)
        teacher = VLMTeacher.from_pretrained(path, dtype=chosen,
                                             device=comfy.model_management.text_encoder_offload_device(),
                                             gradient_checkpointing=gradient_checkpointing,
                                             max_video_pixels=max_video_pixels or None)
        manage(teacher)
        return io.NodeOutput(teacher)


class TeacherAnalyze(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TeacherAnalyze",
            display_name="Teacher: Write Queries",
            category="video reasoning/teacher",
            description="The teacher reads the instruction and the first frame and writes one goal question and "
                        "one to three process questions, each phrased so that 'Yes' means the rule was followed. "
                        "If its reply is unusable, questions are derived from the instruction and the report "
                        "says so.",
            inputs=[
                io.Custom(TEACHER).Input("teacher", tooltip="From Load VLM Teacher."),
                io.String.Input("instruction", multiline=True, default="",
                                tooltip="The task, as given to the video model."),
                io.Int.Input("max_new_tokens", default=256, min=16, max=2048,
                             tooltip="Length limit of the teacher's reply."),
                io.Image.Input("first_frame", optional=True,
                               tooltip="The first frame of the task (the first image of the batch is used)."),
                io.Custom(QUERIES).Input("queries", optional=True,
                                         tooltip="Queries to keep in front of the teacher's (e.g. your own)."),
            ],
            outputs=[io.Custom(QUERIES).Output(display_name="queries"),
                     io.String.Output(display_name="queries_json"),
                     io.String.Output(display_name="report")],
        )

    @classmethod
    def validate_inputs(cls, instruction=None):
        return verdict(cls, non_empty("instruction", instruction))

    @classmethod
    def execute(cls, teacher, instruction, max_new_tokens, first_frame=None, queries=None) -> io.NodeOutput:
        check_widgets(cls, locals())
        frame = image_to_frames(first_frame)[0] if first_frame is not None else None
        start = time.perf_counter()
        load_teacher(teacher)
        proposal = teacher.propose_queries(instruction, frame, max_new_tokens)
        combined = tuple(queries or ()) + tuple(proposal.queries)
        report = json.dumps({"source": proposal.source, "notes": proposal.notes, "reply": proposal.raw,
                             "cost": generation_cost(time.perf_counter() - start)}, indent=2)
        return io.NodeOutput(combined, json.dumps([q.to_dict() for q in combined], indent=2), report,
                             ui={"text": [report]})


class RewardQuery(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="RewardQuery",
            display_name="Reward Query",
            category="video reasoning/teacher",
            description="Adds one yes/no question to a query list. Chain several to build the teacher's rubric.",
            inputs=[
                io.String.Input("question", multiline=True,
                                default="By the end of the video, is the task accomplished?",
                                tooltip="A yes/no question about the video."),
                io.Combo.Input("kind", options=["goal", "process"], default="goal",
                               tooltip="goal: the final state; process: a rule that must hold throughout."),
                io.Float.Input("weight", default=1.0, min=0.01, max=100.0, step=0.01,
                               tooltip="Weight within its kind (goal or process)."),
                io.Combo.Input("expected_answer", options=["Yes", "No"], default="Yes",
                               tooltip="The answer that means the rule was followed."),
                io.Custom(QUERIES).Input("queries", optional=True, tooltip="Queries to append this one to."),
            ],
            outputs=[io.Custom(QUERIES).Output(display_name="queries")],
        )

    @classmethod
    def validate_inputs(cls, question=None, kind=None, expected_answer=None):
        return verdict(cls, non_empty("question", question), kind=kind, expected_answer=expected_answer)

    @classmethod
    def execute(cls, question, kind, weight, expected_answer, queries=None) -> io.NodeOutput:
        check_widgets(cls, locals())
        return io.NodeOutput(tuple(queries or ()) + (Query(question.strip(), kind, weight, expected_answer),))


class VLMScore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VLMScore",
            display_name="Teacher: Score Video",
            category="video reasoning/teacher",
            is_output_node=True,
            description="Grades video frames against the queries: per-query satisfaction P(expected)/(P(Yes)+"
                        "P(No)) and the combined total, with the same K-frame sampling as TTOLoop.",
            inputs=[
                io.Custom(TEACHER).Input("teacher", tooltip="From Load VLM Teacher."),
                io.Image.Input("images", tooltip="The video's frames (an IMAGE batch)."),
                io.Custom(QUERIES).Input("queries", tooltip="The questions to ask."),
                io.Int.Input("frames", default=24, min=1, max=256, tooltip="K frames sampled uniformly "
                             "(first and last included) and shown to the teacher."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, tooltip="Frame rate of the video "
                               "(places the frame timestamps the teacher sees)."),
                io.Float.Input("goal_weight", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="lambda: weight of the goal term against the mean process term."),
            ],
            outputs=[io.Float.Output(display_name="score"), io.Float.Output(display_name="loss"),
                     io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, teacher, images, queries, frames, fps, goal_weight) -> io.NodeOutput:
        check_widgets(cls, locals())
        load_teacher(teacher)
        grade = grade_video(teacher, image_to_frames(images), queries, frames, fps, goal_weight)
        loss = float(grade.loss)
        report = json.dumps({"score": round(grade.score, 4), "loss": round(loss, 4), "frames": grade.frames,
                             "queries": grade.query_rows(queries)}, indent=2)
        return io.NodeOutput(grade.score, loss, report, ui={"text": [report]})
