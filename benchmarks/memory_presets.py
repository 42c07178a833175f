"""The benchmark's presets: TTOLoop's memory presets as a user runs them, and the first release as reference.

The node's presets are read from `tto_engine.presets.PRESETS` (the one table; a preset added there is
benchmarked without a change here). Each runs the node's loop path, where some savings are always on:
LoRA layers in the model's dtype with fp32 masters, gradients only through the graded frames of the
TAEHV, the decoder recomputed in its backward pass, one packed teacher pass over the shared video prefix,
teacher checkpointing when it pays. The
benchmark adds what a preset assumes of the rest of the workflow: the Wan weights' dtype as UNETLoader
loads them (`24gb` is meant for fp8_e4m3fn weights, as TTOLoop's `memory` tooltip says).

`first_release` is the loop before any of those savings, reached through the engine's own options: fp32
LoRA layers (`LoRAAdapter(compute_dtype=float32)`), every frame decoded with gradients (the decoder
without its graded-frames path) and held through the teacher's passes (`recompute_decoder=False`), each
query asked alone (`VLMTeacher.score(packed=False)`), no reasoner checkpointing. Its teacher is
checkpointed, as the first release's shipped workflow set it. One difference remains: the first release
shared one vision-tower pass between the queries; asked alone, each query runs its own.

Each node preset is counted at VLMTeacherLoader's default pixel budget (its plain row), at the
checkpoint's own (`@full`: 24 frames stay 480x832) and at a smaller one, for the budget's trade-off;
`first_release` at the checkpoint's own, as that release read the frames.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tto_engine.presets import PRESETS as NODE_PRESETS, TEACHER_VIDEO_PIXELS  # noqa: E402  (plain data)

from .loop_harness import LoopSettings  # noqa: E402
from .real_models import TeacherSettings  # noqa: E402

FIRST_RELEASE = "first_release"
WEIGHTS_FOR_PRESET = {"24gb": "fp8_e4m3fn"}  # UNETLoader weight_dtype a node preset is meant for (else bf16)
# Teacher pixel budgets per graded clip (24 frames of 480x832 here): the loader's default (6 Mi px: 384x672,
# 3,024 video tokens); 0, the checkpoint's own (25,165,824 px for Qwen3-VL-4B: the frames stay 480x832,
# 4,680 tokens); the Qwen-VL video processor's class default, 768*32*32 px (128x224, 336 tokens).
FULL_BUDGET = 0
TEACHER_BUDGETS = (TEACHER_VIDEO_PIXELS, FULL_BUDGET, 768 * 32 * 32)


@dataclass(frozen=True)
class BenchPreset:
    memory: str | None        # TTOLoop's `memory` input (a key of tto_engine.presets.PRESETS); None: first release
    weight_dtype: str         # UNETLoader weight_dtype
    teacher_pixels: int       # VLMTeacherLoader max_video_pixels (0: the checkpoint's own)
    description: str

    def settings(self) -> LoopSettings:
        return LoopSettings(memory=self.memory, weight_dtype=self.weight_dtype,
                            teacher=TeacherSettings(pixels=self.teacher_pixels))

    def as_dict(self) -> dict:
        return {"memory": self.memory or "(first release loop)", "weight_dtype": self.weight_dtype,
                "teacher_pixels": self.teacher_pixels or "checkpoint's own"}


def row_name(preset: str, pixels: int, default_pixels: int) -> str:
    if pixels == default_pixels:
        return preset
    return f"{preset}@full" if pixels == FULL_BUDGET else f"{preset}@{pixels}px"


def _presets() -> dict[str, BenchPreset]:
    rows = {FIRST_RELEASE: BenchPreset(None, "bf16", FULL_BUDGET,
                                       "The first release's loop: fp32 LoRA, TAEHV decoding all 89 frames with "
                                       "gradients, each query asked alone, no reasoner checkpointing, the "
                                       "checkpoint's own pixel budget.")}
    for pixels in TEACHER_BUDGETS:
        for name, preset in NODE_PRESETS.items():
            weights = WEIGHTS_FOR_PRESET.get(name, "bf16")
            rows[row_name(name, pixels, TEACHER_VIDEO_PIXELS)] = BenchPreset(
                name, weights, pixels, f"TTOLoop memory={name} ({preset.description}), {weights} Wan weights.")
    return rows


PRESETS = _presets()
