"""The optimizer step and the progress line that every toy training loop shares."""

from __future__ import annotations

import time

import torch


def clipped_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, max_norm: float | None = 1.0) -> None:
    """Backward, clip the gradient norm (None: no clipping), step."""
    opt.zero_grad()
    loss.backward()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()


class Progress:
    """A smoothed loss, logged as '<name> step N: loss L (S s)' every `every` steps and at the last."""

    def __init__(self, name: str, steps: int, log=print, every: int = 50):
        self.name, self.steps, self.log, self.every = name, steps, log, every
        self.start, self.running = time.time(), None

    def __call__(self, step: int, loss: torch.Tensor) -> None:
        value = loss.item()
        self.running = value if self.running is None else 0.95 * self.running + 0.05 * value
        if step % self.every == 0 or step == self.steps - 1:
            self.log(f"{self.name} step {step}: loss {self.running:.4f} ({time.time() - self.start:.0f} s)")
