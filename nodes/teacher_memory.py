"""The teacher under ComfyUI's memory management: a ModelPatcher that loads it onto the GPU when a node
needs it and lets ComfyUI offload it when other models need the room.

transformers models expose `device` as a read-only property, which the patcher assigns to: it moves a
small holder module instead. The teacher is built on the offload device; every node that uses it calls
`load_teacher` first, listing the other models it needs at the same time so they are loaded together.
"""

from __future__ import annotations

import torch

import comfy.model_management
import comfy.model_patcher


class TeacherWeights(torch.nn.Module):
    """The teacher's network, in a module whose `device` the patcher may set."""

    def __init__(self, network: torch.nn.Module, device: torch.device):
        super().__init__()
        self.network = network
        self.device = device


def manage(teacher) -> None:
    """Give a teacher built on the offload device its ModelPatcher (teacher.patcher)."""
    teacher.patcher = comfy.model_patcher.ModelPatcher(
        TeacherWeights(teacher.model, teacher.model.device),
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.text_encoder_offload_device())


def load_teacher(teacher, *with_models) -> None:
    """Have ComfyUI put the teacher (and `with_models`, ModelPatchers) on the compute device, all of it: its
    layers are not ComfyUI layers, so they cannot be streamed in part by part."""
    patcher = getattr(teacher, "patcher", None)
    models = [m for m in (patcher, *with_models) if m is not None]
    comfy.model_management.load_models_gpu(models, force_full_load=True)
