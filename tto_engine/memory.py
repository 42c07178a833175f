"""Activation checkpointing of the reasoner's transformer blocks, for the duration of a `with` block.

Without it, the backward pass keeps every activation of every block (tens of GiB for Wan 2.2 5B at
89x480x832). Wrapped blocks keep only their inputs and recompute the rest during the backward pass, one
block at a time: about one more forward pass of compute for a fraction of the memory. A share of the
blocks can be checkpointed instead of all: memory and extra compute both scale with it. The blocks are
wrapped in place and put back on exit, like the LoRA layers, so a shared module is never left changed.
Each wrapper holds its own block: recomputation must not depend on loop variables of the caller's
forward, which a per-block hook closure would.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class CheckpointedBlock(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():  # sampling without gradients: nothing to save, nothing to recompute
            return self.block(*args, **kwargs)
        return checkpoint(self.block, *args, use_reentrant=False, **kwargs)


def chosen_blocks(count: int, share: float) -> list[int]:
    """Indices of `share` of `count` blocks (rounded down), spread evenly and ending with the last block."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"The share of reasoner blocks to recompute must lie in [0, 1], got {share}.")
    taken = [int(j * share + 1e-9) for j in range(count + 1)]  # blocks chosen among the first j
    return [i for i in range(count) if taken[i + 1] > taken[i]]


@contextlib.contextmanager
def checkpointed_blocks(blocks: nn.ModuleList, share: float = 1.0) -> Iterator[None]:
    """Checkpoint `share` of the blocks of `blocks` inside the `with` body (0 or False: none; 1 or True: all).
    Each checkpointed block saves its activations less its input and costs one more forward of itself."""
    originals = list(blocks)
    try:
        for i in chosen_blocks(len(originals), float(share)):
            blocks[i] = CheckpointedBlock(originals[i])
        yield
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block
