"""Shared fixtures: tiny models built once per test session, deterministically, in a temporary folder."""

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
