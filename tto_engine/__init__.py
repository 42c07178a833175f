"""Host-independent engine: a differentiable VLM teacher and the test-time LoRA loop (arXiv 2606.02564).

Roles, each behind a small interface: a reasoner (flow-matching video model, `reasoner.Reasoner`), a
surrogate decoder (`decoders.Decoder`), a teacher (`teacher.VLMTeacher`) that grades frames through
`grading`, and the loop (`loop.run_tto`). `cost` counts what every method spends. No ComfyUI import here.
"""

from .cost import best_of_n_cost, generation_cost, loop_cost, sample_cost, tto_cost
from .decoders import Decoder, LinearRGBDecoder, ModuleDecoder
from .grading import Grade, frame_times, grade_frames, grade_video, sample_frame_indices
from .lora import LoRAAdapter, LoRASpec, save_comfy_lora
from .loop import IterationRecord, TTOConfig, TTOResult, run_tto
from .queries import (Query, QueryProposal, combine_losses, fallback_queries, parse_query_proposal,
                      require_queries)
from .reasoner import GRADIENT_MODES, Reasoner, draw_noise, predict_clean_latent, sample, shifted_sigmas
from .teacher import TeacherScores, VLMTeacher

__all__ = [
    "best_of_n_cost", "generation_cost", "loop_cost", "sample_cost", "tto_cost",
    "Decoder", "LinearRGBDecoder", "ModuleDecoder",
    "Grade", "frame_times", "grade_frames", "grade_video", "sample_frame_indices",
    "LoRAAdapter", "LoRASpec", "save_comfy_lora",
    "IterationRecord", "TTOConfig", "TTOResult", "run_tto",
    "Query", "QueryProposal", "combine_losses", "fallback_queries", "parse_query_proposal", "require_queries",
    "GRADIENT_MODES", "Reasoner", "draw_noise", "predict_clean_latent", "sample", "shifted_sigmas",
    "TeacherScores", "VLMTeacher",
]
