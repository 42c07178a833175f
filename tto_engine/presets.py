"""Memory presets of the test-time loop: how much to recompute rather than keep, by the GPU it must fit.

Some savings cost nothing and are always on: LoRA layers compute in the model's dtype, only the graded
frames are decoded with gradients, the teacher reads the shared video prefix once for all queries and
recomputes its activations when they would be large. The presets choose what costs compute:
- `default` (80 GB cards): the reasoner keeps its activations; an iteration stays below one plain
  4-step sample in compute.
- `24gb`: every reasoner block is recomputed in the backward pass (about one more forward), for use with
  fp8 Wan weights as ComfyUI's UNETLoader loads them (weight_dtype fp8_e4m3fn).
benchmarks/real_shapes.py measures each preset at the paper's shapes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryPreset:
    name: str
    checkpoint_reasoner: bool   # recompute each reasoner block in the backward pass
    description: str


PRESETS = {
    "default": MemoryPreset("default", checkpoint_reasoner=False,
                            description="for 80 GB cards: keeps the reasoner's activations, fastest"),
    "24gb": MemoryPreset("24gb", checkpoint_reasoner=True,
                         description="for 24 GB cards with fp8 Wan weights: recomputes every reasoner block "
                                     "in the backward pass"),
}
