"""Host-independent engine: a differentiable VLM teacher and the test-time LoRA loop (arXiv 2606.02564).

Roles, each behind a small interface: a reasoner (flow-matching video model, `reasoner.Reasoner`), a
surrogate decoder (`decoders.Decoder`), a teacher (`teacher.VLMTeacher`) that grades frames through
`grading`, and the loop (`loop.run_tto`). `cost` counts what every method spends. No ComfyUI import here.

Names are imported from their modules on first use, so `tto_engine.cost` (plain arithmetic) can be used
where torch is not installed, e.g. by a benchmark client that only drives remote servers.
"""

import importlib

_EXPORTS = {
    "cost": ["add_costs", "best_of_n_cost", "generation_cost", "loop_cost", "sample_cost", "tto_cost"],
    "decoders": ["Decoder", "LinearRGBDecoder", "ModuleDecoder", "decode_for_grading"],
    "grading": ["Grade", "frame_times", "grade_frames", "grade_video", "sample_frame_indices"],
    "lora": ["LoRAAdapter", "LoRASpec", "save_comfy_lora"],
    "memory": ["checkpointed_blocks"],
    "loop": ["IterationRecord", "TTOConfig", "TTOResult", "run_tto"],
    "queries": ["Query", "QueryProposal", "combine_losses", "fallback_queries", "parse_query_proposal",
                "require_queries"],
    "reasoner": ["GRADIENT_MODES", "Reasoner", "draw_noise", "predict_clean_latent", "sample", "shifted_sigmas"],
    "teacher": ["TeacherScores", "VLMTeacher"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'tto_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
