"""tto-bench on the toy world through real local ComfyUI servers, with the trained toy models and the nodes users
run (stock loaders, sampler and video nodes; the pack's TAEHV latent, teacher and loop nodes), scored by the
toy world's checker. Needs a folder of trained toy models: $TTO_TOY_MODELS, or the cache that
`tto-bench --models toy` builds (python -m tto_models.toy train --out DIR writes one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from tto_runner import REPO_ROOT
from tto_runner.example_workflows import api_path
from tto_runner.toy_models import ENV_VAR, available_toy_models, models_cache

TOY_MODELS = available_toy_models()
pytestmark = pytest.mark.skipif(
    TOY_MODELS is None, reason=f"no trained toy models: set ${ENV_VAR} to a folder that holds them, or build the "
                               f"cache {models_cache()} (python -m tto_models.toy train --out DIR)")
N_TASKS = 2


def run_module(module: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m module ...` in this checkout, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def toy_tasks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy-tasks")
    made = run_module("tto_models.toy", "generate", "--out", root, "--n", N_TASKS, "--seed", 2026)
    assert made.returncode == 0, made.stderr
    return root


def video_shape(path: Path) -> tuple:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return (len(frames), *frames[0].shape)


def score(videos: Path, tasks: Path) -> dict:
    scored = run_module("tto_models.toy", "score", "--videos", videos, "--tasks", tasks)
    assert scored.returncode == 0, scored.stderr
    return json.loads((videos / "toy_scores.json").read_text())


@pytest.mark.parametrize("method", ["baseline", "tto"])
def test_the_toy_world_through_a_local_server_scored_by_its_checker(toy_tasks, tmp_path, method):
    out = tmp_path / "out"
    extra = ["--max-iterations", 3] if method == "tto" else []
    run = run_module("tto_runner.bench", "--tasks", toy_tasks, "--method", method, "--models", "toy",
                     "--models-dir", TOY_MODELS, "--out", out, *extra)
    assert run.returncode == 0, run.stderr
    assert "starting a local ComfyUI (cpu)" in run.stderr
    summary = json.loads((out / method / "summary.json").read_text())
    assert summary["models"] == "toy" and summary["template"] == f"workflows/api/bench/{method}_toy.json"
    assert summary["counts"] == {"done": N_TASKS} and summary["size"] == "template"
    for record in summary["tasks"]:
        assert video_shape(out / method / record["video"]) == (17, 128, 128, 3)
        assert record["size"] == [128, 128] and record["length"] == 17
        if method == "tto":
            assert 1 <= record["iterations"] <= 3 and record["stop_reason"] in ("threshold", "max_iterations")
            assert record["scores"] and all(0.0 <= s["score"] <= 1.0 for s in record["scores"])
            assert record["reports"]["TTOLoop"]["teacher_frames"] == 9
            assert record["cost"]["equal_wall_samples"] >= 1
        else:
            assert record["cost"]["reasoner_forward"] == 4
    if method == "tto":
        assert "Best-of-N at this run's wall time: --n " in run.stderr
    verdicts = score(out / method, toy_tasks)
    assert verdicts["n"] == N_TASKS and verdicts["failures"]["missing"] == 0
    assert sorted(verdicts["per_task"]) == [r["task"] for r in summary["tasks"]]
    assert all(isinstance(v["success"], bool) for v in verdicts["per_task"].values())


def test_the_toy_workflow_runs_as_a_tto_bench_workflow(toy_tasks, tmp_path):
    """workflows/api/vlm_teacher_toy.json, the drag-and-drop toy workflow, on one instance."""
    out = tmp_path / "out"
    run = run_module("tto_runner.bench", "--tasks", toy_tasks, "--method", "tto", "--models", "toy",
                     "--models-dir", TOY_MODELS, "--out", out, "--workflow", api_path("vlm_teacher_toy"),
                     "--limit", 1, "--max-iterations", 2)
    assert run.returncode == 0, run.stderr
    (record,) = json.loads((out / "tto" / "summary.json").read_text())["tasks"]
    assert record["status"] == "done" and 1 <= record["iterations"] <= 2
    assert video_shape(out / "tto" / record["video"]) == (17, 128, 128, 3)
