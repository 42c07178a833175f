"""Host-independent engine: a differentiable VLM teacher and the test-time LoRA loop (arXiv 2606.02564).

Roles: a reasoner (flow-matching video model, `reasoner.Reasoner`), a surrogate decoder (`decoders`),
a teacher (`teacher.VLMTeacher`), and the loop (`loop.run_tto`). No ComfyUI import anywhere in here.
"""

from .decoders import LinearRGBDecoder, ModuleDecoder
from .lora import LoRAAdapter, LoRASpec, save_comfy_lora
from .loop import IterationRecord, TTOConfig, TTOResult, run_tto
from .queries import Query, QueryProposal, combine_losses, fallback_queries, parse_query_proposal
from .reasoner import GRADIENT_MODES, draw_noise, predict_clean_latent, sample, shifted_sigmas
from .teacher import TeacherScores, VLMTeacher, sample_frame_indices

__all__ = [
    "LinearRGBDecoder", "ModuleDecoder", "LoRAAdapter", "LoRASpec", "save_comfy_lora", "IterationRecord",
    "TTOConfig", "TTOResult", "run_tto", "Query", "QueryProposal", "combine_losses", "fallback_queries",
    "parse_query_proposal", "GRADIENT_MODES", "draw_noise", "predict_clean_latent", "sample", "shifted_sigmas", "TeacherScores",
    "VLMTeacher", "sample_frame_indices",
]
