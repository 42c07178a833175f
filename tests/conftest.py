"""Shared fixtures: tiny models built once per test session, deterministically, in a temporary folder, and
the real ComfyUI host imported in this process (for the pack's own modules and the host's model classes)."""

import importlib
import sys

import pytest
import torch

from tto_engine import VLMTeacher
from tto_models.qwen import build_tiny_qwen3vl


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory):
    return build_tiny_qwen3vl(tmp_path_factory.mktemp("teacher") / "tiny-qwen3-vl", seed=0)


@pytest.fixture(scope="session")
def teacher(tiny_teacher_dir):
    return VLMTeacher.from_pretrained(tiny_teacher_dir, dtype=torch.float32)


@pytest.fixture(scope="session")
def comfy():
    """The host's `comfy` package, imported in process on the CPU ($TTO_COMFYUI or the one setup_env.sh builds)."""
    from tto_runner.local_server import default_host_dir

    root = str(default_host_dir())
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True  # before any other comfy import
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_management
    import comfy.sd
    import comfy.utils
    assert comfy.model_management.get_torch_device().type == "cpu"
    return comfy


@pytest.fixture(scope="session")
def pack(comfy):
    """This repository imported as the ComfyUI custom-node package it is (its modules import relatively)."""
    from tto_runner.paths import import_as_pack

    name = import_as_pack("vlm_teacher_pack").__name__
    return lambda submodule: importlib.import_module(f"{name}.{submodule}")
