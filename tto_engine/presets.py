"""Memory presets of the test-time loop, and the teacher's default pixel budget: what to recompute rather
than keep, and how much of each graded frame the teacher reads, by the GPU it must fit.

Some savings cost nothing and are always on: LoRA layers compute in the model's dtype, only the graded
frames are decoded with gradients, the teacher reads the shared video prefix once for all queries and
recomputes its activations when they would be large. The presets choose what costs compute:
- `default` (80 GB cards): a third of the reasoner's blocks are recomputed in the backward pass, enough
  to stay under 60 GiB at 89x480x832 while an iteration stays below one plain 4-step sample in compute.
- `24gb`: every reasoner block is recomputed (about one more forward), for use with fp8 Wan weights as
  ComfyUI's UNETLoader loads them (weight_dtype fp8_e4m3fn).
benchmarks/real_shapes.py counts each preset at the paper's shapes; benchmarks/RESULTS.md has the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

# VLMTeacherLoader's default pixel budget per graded clip (frames x height x width). Qwen3-VL-4B's own
# budget (25,165,824 px) leaves 24 frames of 480x832 at full size, 4,680 video tokens, and the teacher is
# then half of an iteration's compute; at this budget they are read at 384x672 (3,024 tokens), which
# brings an iteration under one plain 4-step sample (benchmarks/RESULTS.md, "Teacher pixel budget").
TEACHER_VIDEO_PIXELS = 6 * 1024 * 1024


@dataclass(frozen=True)
class MemoryPreset:
    name: str
    checkpoint_reasoner: float  # share of the reasoner's blocks recomputed in the backward pass
    description: str


PRESETS = {
    "default": MemoryPreset("default", checkpoint_reasoner=1 / 3,
                            description="for 80 GB cards: recomputes a third of the reasoner's blocks in the "
                                        "backward pass"),
    "24gb": MemoryPreset("24gb", checkpoint_reasoner=1.0,
                         description="for 24 GB cards with fp8 Wan weights: recomputes every reasoner block "
                                     "in the backward pass"),
}
