"""Grading a video with the teacher, the one way every part of the pack does it.

K frames are spread uniformly over the decoded video (first and last included), each is stamped with its
time on the real video's clock, the teacher answers every query in one pass, and the per-query answer NLLs
are combined with lambda into one loss. The loop, Best-of-N and VLMScore all grade through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .queries import Query, combine_losses, require_queries


def sample_frame_indices(num_frames: int, k: int) -> list[int]:
    """K indices spread uniformly over the video, first and last included (all frames if fewer than K)."""
    if num_frames < 1:
        raise ValueError("The video has no frames.")
    if k < 1:
        raise ValueError(f"K (frames shown to the teacher) must be at least 1, got {k}.")
    if k >= num_frames:
        return list(range(num_frames))
    if k == 1:
        return [0]
    return [round(i * (num_frames - 1) / (k - 1)) for i in range(k)]


def frame_times(indices: Sequence[int], video_fps: float, temporal_stride: int = 1) -> list[float]:
    """Seconds at which decoded frames sit in the real video (a decoded frame may stand for `temporal_stride`
    video frames, as with the linear latent->RGB map, one frame per latent frame)."""
    if not video_fps > 0:
        raise ValueError(f"The video frame rate must be positive, got {video_fps}.")
    return [i * temporal_stride / video_fps for i in indices]


@dataclass
class Grade:
    loss: torch.Tensor       # lambda-combined NLL of the expected answers (differentiable)
    losses: torch.Tensor     # [Q] per-query NLL (differentiable)
    scores: torch.Tensor     # [Q] per-query P(expected) / (P(Yes) + P(No)), detached, on the CPU
    p_yes: torch.Tensor      # [Q] P("Yes") over the full vocabulary, detached, on the CPU
    score: float             # lambda-combined display score
    frames: int              # how many frames the teacher saw

    def query_rows(self, queries: Sequence[Query]) -> list[dict]:
        """One readable row per query, for reports."""
        losses = self.losses.detach().float().cpu()
        return [{"question": q.text, "kind": q.kind, "expected": q.answer, "score": round(float(s), 4),
                 "p_yes": round(float(p), 6), "nll": round(float(n), 4)}
                for q, s, p, n in zip(queries, self.scores, self.p_yes, losses)]


def grade_frames(teacher, frames: torch.Tensor, times: Sequence[float], queries: Sequence[Query],
                 goal_weight: float) -> Grade:
    """Grade frames already chosen from a video [K, 3, H, W] in [0, 1], shown at `times` seconds."""
    queries = require_queries(queries)
    answered = teacher.score(frames, queries, list(times))
    loss = combine_losses(answered.losses, queries, goal_weight)
    score = float(combine_losses(answered.scores, queries, goal_weight))
    return Grade(loss, answered.losses, answered.scores, answered.p_yes, score, frames.shape[0])


def grade_video(teacher, video: torch.Tensor, queries: Sequence[Query], k: int, video_fps: float,
                goal_weight: float, temporal_stride: int = 1) -> Grade:
    """Sample K frames of a decoded video [F, 3, H, W] in [0, 1] and grade them."""
    indices = sample_frame_indices(video.shape[0], k)
    return grade_frames(teacher, video[indices], frame_times(indices, video_fps, temporal_stride), queries,
                        goal_weight)
