"""Memory presets: named sets of loop settings, as data, and the switches they are made of.

A switch is a setting that changes the loop's memory or cost. Some exist in the code today, some are
planned (issue 9). A preset may name planned switches; the benchmark then runs it with the switches that
exist, reports which ones it could not apply (`pending`), and marks the preset incomplete. Nothing is
emulated: when a planned switch lands, give it an `apply` entry in `loop_settings` below and every
preset that names it is measured with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .loop_harness import LoopSettings
from .real_models import TeacherSettings

QWEN_VIDEO_DEFAULT_PIXELS = 768 * 32 * 32  # the Qwen-VL video processor's class default (786,432 px per clip)


@dataclass(frozen=True)
class Preset:
    description: str
    weight_dtype: str = "bf16"              # Wan weights as UNETLoader loads them: bf16 or fp8_e4m3fn
    wan_checkpointing: bool = False         # recompute each Wan block in the backward
    lora_compute_dtype: str = "fp32"        # dtype the LoRA layers compute in (fp32 keeps fp32 input copies)
    decode_graded_only: bool = False        # decode with gradients only the K frames the teacher grades
    teacher_checkpointing: bool = True      # recompute each teacher layer in the backward
    teacher_pixels: int = 0                 # teacher pixel budget per clip (0: the checkpoint's own)
    teacher_prefix_sharing: bool = False    # encode system + video once; only the question suffixes per query

    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "description"}


# Today's code, switch by switch: where the switch lives, or None while it is only planned.
SWITCHES = {
    "weight_dtype": "host: UNETLoader weight_dtype (fp8_e4m3fn runs as bf16 through ComfyUI's manual cast)",
    "wan_checkpointing": None,
    "lora_compute_dtype": "engine only: LoRAAdapter(dtype=...) sets the LoRA weights' dtype, so the master "
                          "weights and AdamW state follow it; the node has no input for it",
    "decode_graded_only": None,
    "teacher_checkpointing": "node: VLMTeacherLoader gradient_checkpointing",
    "teacher_pixels": "node: VLMTeacherLoader max_video_pixels",
    "teacher_prefix_sharing": None,
}

_BASE = Preset("")


def pending(preset: Preset) -> list[str]:
    """The planned switches this preset sets away from today's behaviour."""
    return [f.name for f in fields(Preset) if f.name != "description" and SWITCHES.get(f.name) is None
            and getattr(preset, f.name) != getattr(_BASE, f.name)]


def loop_settings(preset: Preset) -> LoopSettings:
    """The preset in terms of today's code (pending switches are left out; see `pending`)."""
    return LoopSettings(weight_dtype=preset.weight_dtype, lora_dtype=preset.lora_compute_dtype,
                        teacher=TeacherSettings(checkpointing=preset.teacher_checkpointing,
                                                pixels=preset.teacher_pixels))


PRESETS = {
    "default": Preset("What a user gets today: the shipped Wan 2.2 workflow (bf16 weights, fp32 LoRA, TAEHV "
                      "decoding all frames, teacher checkpointing on, the checkpoint's pixel budget)."),
    "loader_defaults": Preset("As default, with VLMTeacherLoader's own default: teacher checkpointing off.",
                              teacher_checkpointing=False),
    "fp8_weights": Preset("As default, with Wan weights loaded as fp8_e4m3fn.", weight_dtype="fp8_e4m3fn"),
    "lora_bf16": Preset("As default, with the LoRA in bf16.", lora_compute_dtype="bf16"),
    "teacher_786k": Preset("As default, with the teacher's pixel budget at the Qwen video processor's class "
                           "default (786,432 px per clip).", teacher_pixels=QWEN_VIDEO_DEFAULT_PIXELS),
    "wan_checkpointing": Preset("As default, with per-block checkpointing of the Wan blocks.",
                                wan_checkpointing=True),
    "decode_graded_only": Preset("As default, decoding with gradients only the graded frames.",
                                 decode_graded_only=True),
    "teacher_prefix_sharing": Preset("As default, with the prompt prefix encoded once for all queries.",
                                     teacher_prefix_sharing=True),
    "80gb": Preset("The planned fast default for 80 GB cards: every activation saving, bf16 weights.",
                   wan_checkpointing=True, lora_compute_dtype="bf16", decode_graded_only=True,
                   teacher_pixels=QWEN_VIDEO_DEFAULT_PIXELS, teacher_prefix_sharing=True),
    "24gb": Preset("The planned 24 GB mode: fp8 Wan weights as ComfyUI loads them, checkpointing everywhere.",
                   weight_dtype="fp8_e4m3fn", wan_checkpointing=True, lora_compute_dtype="bf16",
                   decode_graded_only=True, teacher_pixels=QWEN_VIDEO_DEFAULT_PIXELS,
                   teacher_prefix_sharing=True),
}
