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

Every preset is counted at each teacher pixel budget in `TEACHER_BUDGETS`: the checkpoint's own (24
frames stay 480x832) and smaller ones, since the loop's default budget is still to be chosen.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tto_engine.presets import PRESETS as NODE_PRESETS  # noqa: E402  (plain data: no torch, no host)

from .loop_harness import LoopSettings  # noqa: E402
from .real_models import TeacherSettings  # noqa: E402

FIRST_RELEASE = "first_release"
WEIGHTS_FOR_PRESET = {"24gb": "fp8_e4m3fn"}  # UNETLoader weight_dtype a node preset is meant for (else bf16)
# Teacher pixel budgets per graded clip (24 frames of 480x832 here). 0: the checkpoint's own (25,165,824 px for
# Qwen3-VL-4B: the frames stay 480x832, 4,680 video tokens); 6 Mi px: 384x672, 3,024 tokens; the Qwen-VL video
# processor's class default, 768*32*32 px: 128x224, 336 tokens.
TEACHER_BUDGETS = (0, 6 * 1024 * 1024, 768 * 32 * 32)


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


def row_name(preset: str, pixels: int) -> str:
    return preset if not pixels else f"{preset}@{pixels}px"


def _presets() -> dict[str, BenchPreset]:
    bases = {FIRST_RELEASE: (None, "bf16", "The first release's loop: fp32 LoRA, TAEHV decoding all 89 frames with "
                                           "gradients, each query asked alone, no reasoner checkpointing.")}
    for name, preset in NODE_PRESETS.items():
        weights = WEIGHTS_FOR_PRESET.get(name, "bf16")
        bases[name] = (name, weights, f"TTOLoop memory={name} ({preset.description}), {weights} Wan weights.")
    return {row_name(name, pixels): BenchPreset(memory, weights, pixels, description)
            for pixels in TEACHER_BUDGETS for name, (memory, weights, description) in bases.items()}


PRESETS = _presets()
