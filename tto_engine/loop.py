"""Test-time optimisation of a LoRA with a VLM teacher (arXiv 2606.02564), the whole loop in one place.

Per instance: draw the noise once. Each iteration predicts the clean latent (through the first step by
default), decodes it cheaply, samples K frames, asks the teacher every query, and combines the answers'
NLLs into one loss. Stop when the loss reaches the threshold; otherwise take one AdamW step on the LoRA.
The final video is then an ordinary few-step sampling run with the adapted LoRA and the same noise.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from .decoders import Decoder
from .lora import LoRAAdapter
from .queries import Query, combine_losses
from .reasoner import GRADIENT_MODES, GradientMode, Reasoner, predict_clean_latent
from .teacher import VLMTeacher, sample_frame_indices


@dataclass
class TTOConfig:
    max_iterations: int = 40
    lr: float = 5e-5
    loss_threshold: float = 0.22        # ~0.8 mean confidence in the expected answer
    goal_weight: float = 0.5            # lambda between the goal loss and the mean process loss
    num_frames: int = 24                # K frames shown to the teacher
    steps: int = 4                      # sampling steps of the (distilled) reasoner
    gradient_mode: GradientMode = "first"
    video_fps: float = 24.0             # frame rate of the decoded video (places the teacher's timestamps)
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.max_iterations < 1:
            raise ValueError("max_iterations must be at least 1.")
        if not self.lr > 0:
            raise ValueError("lr must be positive.")
        if not 0.0 <= self.goal_weight <= 1.0:
            raise ValueError("goal_weight (lambda) must lie in [0, 1].")
        if self.num_frames < 1:
            raise ValueError("num_frames (K) must be at least 1.")
        if self.gradient_mode not in GRADIENT_MODES:
            raise ValueError(f"gradient_mode must be one of {GRADIENT_MODES}.")


@dataclass
class IterationRecord:
    iteration: int
    loss: float
    query_losses: list[float]
    query_scores: list[float]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per role: reasoner, decode, teacher, optimizer
    updated: bool = False  # a backward pass and an optimizer step followed this evaluation


@dataclass
class TTOResult:
    lora: LoRAAdapter
    history: list[IterationRecord]
    iterations: int
    stop_reason: str            # "threshold" | "max_iterations" | "non_finite_loss" | "non_finite_gradient"
    final_loss: float
    noise: torch.Tensor
    latent: torch.Tensor        # the last evaluated clean-latent estimate (detached)
    decoded_frames: int = 0     # frames the surrogate decoder produced
    teacher_frames: int = 0     # of which the teacher saw these (K, or all if fewer)

    def history_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.history]

    def cost(self, steps: int, gradient_mode: str) -> dict:
        """Model passes the loop spent: per evaluation one reasoner call ("first") or one per step, one
        decode and one batched teacher pass; a backward of each for every update."""
        per_eval = 1 if gradient_mode == "first" else steps
        updates = sum(r.updated for r in self.history)
        return {"reasoner_calls": self.iterations * per_eval, "reasoner_backward": updates,
                "decoder_forward": self.iterations, "decoder_backward": updates,
                "teacher_forward": self.iterations, "teacher_backward": updates, "optimizer_steps": updates,
                "wall_s": round(sum(r.seconds for r in self.history), 3)}


def run_tto(reasoner: Reasoner, decoder: Decoder, teacher: VLMTeacher, queries: Sequence[Query],
            lora: LoRAAdapter, noise: torch.Tensor, clean: torch.Tensor, noise_mask: torch.Tensor | None = None,
            config: TTOConfig = TTOConfig(),
            on_iteration: Callable[[IterationRecord], None] | None = None) -> TTOResult:
    """Adapt `lora` (attached to `reasoner.module` only inside this call) for one instance.

    noise: the fixed eps, model-space latent shape; clean: the clean/initial latent (zeros for text-to-video,
    the encoded first frame where noise_mask is 0 for image-to-video). `on_iteration` sees every record and
    may raise to cancel; the host module is restored either way.
    """
    if not queries:
        raise ValueError("No queries: the teacher needs at least one question to grade the video.")
    sigmas = reasoner.sigmas(config.steps)
    params = lora.parameters()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[IterationRecord] = []
    good_state = lora.state_dict()
    stop_reason, latent, frame_counts = "max_iterations", None, (0, 0)

    with lora.attached():
        for iteration in range(1, config.max_iterations + 1):
            start, timings = time.perf_counter(), {}

            # Forward, role by role; the graph is cut between roles so each backward is timed on its own.
            tick = time.perf_counter()
            z0 = predict_clean_latent(reasoner, noise, clean, noise_mask, sigmas, config.gradient_mode)
            timings["reasoner"] = time.perf_counter() - tick
            z0_cut = z0.detach().requires_grad_()

            tick = time.perf_counter()
            video = decoder(z0_cut)
            idx = sample_frame_indices(video.shape[0], config.num_frames)
            frames = video[idx]
            frame_counts = (video.shape[0], len(idx))
            timings["decode"] = time.perf_counter() - tick
            frames_cut = frames.detach().requires_grad_()

            tick = time.perf_counter()
            stamps = [i * decoder.temporal_stride / config.video_fps for i in idx]
            graded = teacher.score(frames_cut, queries, stamps)
            loss = combine_losses(graded.losses, queries, config.goal_weight)
            loss_value = float(loss.detach())
            timings["teacher"] = time.perf_counter() - tick
            latent = z0.detach()

            record = IterationRecord(iteration, loss_value, graded.losses.detach().float().cpu().tolist(),
                                     graded.scores.tolist(), 0.0, timings)
            if not math.isfinite(loss_value):
                lora.load_state_dict(good_state)
                stop_reason = "non_finite_loss"
            elif loss_value <= config.loss_threshold:
                stop_reason = "threshold"
            elif iteration < config.max_iterations:
                # Backward in reverse role order, then one optimizer step on the LoRA alone.
                tick = time.perf_counter()
                loss.backward()
                timings["teacher"] += time.perf_counter() - tick
                tick = time.perf_counter()
                frames.backward(frames_cut.grad)
                timings["decode"] += time.perf_counter() - tick
                tick = time.perf_counter()
                z0.backward(z0_cut.grad)
                timings["reasoner"] += time.perf_counter() - tick

                tick = time.perf_counter()
                if all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
                    good_state = lora.state_dict()
                    optimizer.step()
                    record.updated = True
                else:
                    stop_reason = "non_finite_gradient"
                optimizer.zero_grad(set_to_none=True)
                timings["optimizer"] = time.perf_counter() - tick
            del z0, video, frames, graded, loss

            record.seconds = time.perf_counter() - start
            history.append(record)
            if on_iteration is not None:
                on_iteration(record)
            if stop_reason != "max_iterations":
                break

    finite = [r.loss for r in history if math.isfinite(r.loss)]
    return TTOResult(lora, history, len(history), stop_reason, finite[-1] if finite else float("nan"),
                     noise, latent, *frame_counts)
