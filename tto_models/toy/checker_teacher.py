"""The checker as a teacher: the three rules made differentiable in pixel space (the size rule held to
65-135% of frame 0's area, inside the checker's 50-150%), answering the family's questions with the
instance's true positions in hand. No VLM could know as much; it is the ceiling a teacher can give the
loop, to tell what the loop and LoRA can fix from what the trained teacher gets wrong
(`probe-loop --checker`), and a source of clips along the paths the loop should take
(`train-teacher --checker-loop-instances`).
"""

from __future__ import annotations

import torch

from . import teacher as T
from . import world
from .code_autoencoder import ball_colour_margin, soft_ball

GOAL_DEPTH = 2.0        # px inside the square at which the goal answer is about sure


class CheckerTeacher:
    """Duck-types the pack's VLMTeacher for one instance: `score` answers from the checker's rules; anything
    else (the model the host manages, the query writer) is the wrapped teacher's."""

    def __init__(self, inner, instance: world.Instance):
        from tto_engine.teacher import TeacherScores

        self._scores = TeacherScores
        self.inner, self.rules = inner, T.rules_for(instance)
        self.boxes = torch.from_numpy(world.obstacle_boxes(instance)).float()
        self.lo = torch.tensor(instance.target, dtype=torch.float32)
        self.hi = self.lo + world.TARGET_SIZE
        rows, cols = torch.meshgrid(torch.arange(world.SIZE) + 0.5, torch.arange(world.SIZE) + 0.5, indexing="ij")
        self.xy = torch.stack([cols, rows]).float()

    def __getattr__(self, name):
        if name == "inner":             # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def score(self, frames: torch.Tensor, queries, timestamps=None, packed: bool = True):
        """frames [K, 3, 128, 128] in [0, 1], first and last frame of the video among them."""
        if len(queries) != len(self.rules):
            raise ValueError(f"The checker teacher answers this instance's {len(self.rules)} questions "
                             f"({', '.join(self.rules)}), got {len(queries)} queries.")
        ball = soft_ball(ball_colour_margin(frames))                                # [K, H, W]
        area = ball.sum(dim=(-2, -1)) + 1e-3
        centroid = (ball[-1] * self.xy).sum(dim=(-2, -1)) / area[-1]
        depth = torch.minimum(centroid - self.lo, self.hi - centroid).min()
        ratio = area / area[0].detach()
        nll = {"goal": torch.nn.functional.softplus(GOAL_DEPTH - depth),
               "obstacles": (ball * self.boxes).sum() / 4.0,
               "size": 5.0 * (torch.relu(0.65 - ratio) + torch.relu(ratio - 1.35)).sum()}
        losses = torch.stack([nll[r] for r in self.rules])
        p = torch.exp(-losses.detach())
        return self._scores(losses, p, p)
