"""Test-time optimisation of a LoRA with a VLM teacher (arXiv 2606.02564, Algorithm 1), the whole loop.

Per instance: draw the noise once. Each iteration predicts the clean latent (through the first step by
default), decodes it cheaply, shows K frames to the teacher with every query, and combines the answers'
NLLs into one loss. Stop when the loss reaches the threshold; otherwise take one AdamW step on the LoRA.
The final video is then an ordinary few-step sampling run with the adapted LoRA and the same noise.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .cost import loop_cost
from .decoders import Decoder, decode_for_grading
from .grading import frame_times, grade_frames
from .lora import LoRAAdapter
from .memory import checkpointed_blocks
from .queries import Query, require_queries
from .reasoner import GRADIENT_MODES, GradientMode, Reasoner, predict_clean_latent
from .teacher import VLMTeacher


@dataclass
class TTOConfig:
    max_iterations: int = 40
    learning_rate: float = 5e-5
    loss_threshold: float = 0.22        # ~0.8 mean confidence in the expected answer
    goal_weight: float = 0.5            # lambda between the goal loss and the mean process loss
    frames: int = 24                    # K frames shown to the teacher
    steps: int = 4                      # sampling steps of the (distilled) reasoner
    gradient_mode: GradientMode = "first"
    video_fps: float = 24.0             # frame rate of the decoded video (places the teacher's timestamps)
    weight_decay: float = 0.0
    checkpoint_reasoner: float = 0.0    # share of reasoner blocks recomputed in the backward pass (False/0: none,
                                        # True/1: all): less memory for about that share of one more forward
    recompute_decoder: bool = True      # decode again in the decoder's backward pass instead of holding its
                                        # activations through the teacher's passes (one more decode, small)

    def __post_init__(self):
        if self.max_iterations < 1:
            raise ValueError("max_iterations must be at least 1.")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be positive.")
        if not 0.0 <= self.goal_weight <= 1.0:
            raise ValueError("goal_weight (lambda) must lie in [0, 1].")
        if self.frames < 1:
            raise ValueError("frames (K) must be at least 1.")
        if not 0.0 <= self.checkpoint_reasoner <= 1.0:
            raise ValueError("checkpoint_reasoner (the share of blocks to recompute) must lie in [0, 1].")
        if self.gradient_mode not in GRADIENT_MODES:
            raise ValueError(f"gradient_mode must be one of {GRADIENT_MODES}.")


@dataclass
class IterationRecord:
    iteration: int
    loss: float
    query_losses: list[float]
    query_scores: list[float]
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per role: reasoner, decode, teacher, optimizer
    updated: bool = False  # a backward pass and an optimizer step followed this evaluation


@dataclass
class TTOResult:
    lora: LoRAAdapter
    history: list[IterationRecord]
    stop_reason: str            # "threshold" | "max_iterations" | "non_finite_loss" | "non_finite_gradient"
    noise: torch.Tensor
    latent: torch.Tensor        # the last evaluated clean-latent estimate (detached)
    decoded_frames: int = 0     # frames the surrogate decoder produced
    teacher_frames: int = 0     # of which the teacher saw these (K, or all if fewer)

    @property
    def iterations(self) -> int:
        return len(self.history)

    @property
    def final_loss(self) -> float:
        finite = [r.loss for r in self.history if math.isfinite(r.loss)]
        return finite[-1] if finite else float("nan")

    def cost(self, steps: int, gradient_mode: str, cfg: float = 1.0) -> dict:
        return loop_cost([r.updated for r in self.history], [r.seconds for r in self.history], steps,
                         gradient_mode, cfg)


class RoleTimer:
    """Seconds spent per role, added up across forward and backward: `with timer("teacher"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, role: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[role] = self.seconds.get(role, 0.0) + time.perf_counter() - start


def cut(t: torch.Tensor) -> torch.Tensor:
    """A leaf copy of `t` that collects its gradient: the graph ends here, so each role's backward runs
    (and is timed) on its own, and an early stop costs no backward at all."""
    return t.detach().requires_grad_()


def run_tto(reasoner: Reasoner, decoder: Decoder, teacher: VLMTeacher, queries: Sequence[Query],
            lora: LoRAAdapter, noise: torch.Tensor, clean: torch.Tensor, noise_mask: torch.Tensor | None = None,
            config: TTOConfig | None = None,
            on_iteration: Callable[[IterationRecord], None] | None = None) -> TTOResult:
    """Adapt `lora` (attached to `reasoner.module` only inside this call) for one instance.

    noise: the fixed eps, model-space latent shape; clean: the clean/initial latent (zeros for text-to-video,
    the encoded first frame where noise_mask is 0 for image-to-video). `on_iteration` sees every record and
    may raise to cancel; the host module is restored either way.
    """
    config = config or TTOConfig()
    queries = require_queries(queries)
    sigmas = reasoner.sigmas(config.steps)
    optimizer = torch.optim.AdamW(lora.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history: list[IterationRecord] = []
    last_good = lora.state_dict()
    stop_reason, latent, counts = "max_iterations", None, (0, 0)

    with lora.attached(), checkpointed_blocks(reasoner.blocks, config.checkpoint_reasoner):
        for iteration in range(1, config.max_iterations + 1):
            start, timer = time.perf_counter(), RoleTimer()
            with timer("reasoner"):
                z0 = predict_clean_latent(reasoner, noise, clean, noise_mask, sigmas, config.gradient_mode)
            z0_leaf = cut(z0)
            with timer("decode"):
                frames, indices, decoded = decode_for_grading(decoder, z0_leaf, config.frames,
                                                               config.recompute_decoder)
            frames_leaf = cut(frames)
            with timer("teacher"):
                times = frame_times(indices, config.video_fps, decoder.temporal_stride)
                grade = grade_frames(teacher, frames_leaf, times, queries, config.goal_weight)
            record = IterationRecord(iteration, float(grade.loss.detach()),
                                     grade.losses.detach().float().cpu().tolist(), grade.scores.tolist(),
                                     timings=timer.seconds)
            latent, counts = z0.detach(), (decoded, len(indices))

            if not math.isfinite(record.loss):
                lora.load_state_dict(last_good)
                stop_reason = "non_finite_loss"
            elif record.loss <= config.loss_threshold:
                stop_reason = "threshold"
            elif iteration < config.max_iterations:
                # Backward role by role, in reverse order, then one optimizer step on the LoRA alone.
                with timer("teacher"):
                    grade.loss.backward()
                with timer("decode"):
                    frames.backward(frames_leaf.grad)
                with timer("reasoner"):
                    z0.backward(z0_leaf.grad)
                with timer("optimizer"):
                    lora.collect_gradients()
                    if all_finite([p.grad for p in lora.parameters() if p.grad is not None]):
                        last_good = lora.state_dict()
                        optimizer.step()
                        lora.publish_weights()
                        record.updated = True
                    else:
                        stop_reason = "non_finite_gradient"
                    optimizer.zero_grad(set_to_none=True)
            del z0, frames, grade

            record.seconds = time.perf_counter() - start
            history.append(record)
            if on_iteration is not None:
                on_iteration(record)
            if stop_reason != "max_iterations":
                break

    return TTOResult(lora, history, stop_reason, noise, latent, *counts)


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite, with one device sync for all of them."""
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
