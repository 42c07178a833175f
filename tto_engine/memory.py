"""Activation checkpointing of the reasoner's transformer blocks, for the duration of a `with` block.

Without it, the backward pass keeps every activation of every block (tens of GiB for Wan 2.2 5B at
89x480x832). Wrapped blocks keep only their inputs and recompute the rest during the backward pass, one
block at a time: about one more forward pass of compute for a fraction of the memory. The blocks are
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


@contextlib.contextmanager
def checkpointed_blocks(blocks: nn.ModuleList, enabled: bool = True) -> Iterator[None]:
    """Checkpoint every block of `blocks` inside the `with` body (a no-op when not enabled)."""
    if not enabled:
        yield
        return
    originals = list(blocks)
    try:
        for i, block in enumerate(originals):
            blocks[i] = CheckpointedBlock(block)
        yield
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block
