"""tto-bench against real local ComfyUI servers with the tiny models: output layout, summary, resuming, bad task
folders, failing prompts, a video that cannot be written, and a server killed in the middle of a run. The
parts that need no server are in test_bench_units.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest
import requests

from tto_runner import REPO_ROOT, LocalComfy
from tto_runner.bench import TEMPLATE_DIR, main
from tto_runner.demo import draw_first_frame, ensure_tiny_models

PROMPT = "Move the yellow ball to the red square without touching the X."
GOOD = ["In-Domain_50/G-1_ball_to_square_data-generator/00000",
        "In-Domain_50/G-1_ball_to_square_data-generator/00001",
        "Out-of-Domain_50/O-2_avoid_the_cross_data-generator/00000",
        "Out-of-Domain_50/O-2_avoid_the_cross_data-generator/00001"]
BAD = {"Out-of-Domain_50/O-2_avoid_the_cross_data-generator/00002": "without prompt.txt",
       "Out-of-Domain_50/O-2_avoid_the_cross_data-generator/00003": "at least 32 px"}


@pytest.fixture(scope="module")
def task_tree(tmp_path_factory) -> Path:
    """Four tasks in VBVR-Bench layout and two bad folders (no prompt; a 16x16 first frame)."""
    root = tmp_path_factory.mktemp("vbvr")
    for i, task_id in enumerate(GOOD):
        folder = root / task_id
        folder.mkdir(parents=True)
        draw_first_frame(64, ball=(12 + 6 * i, 12)).save(folder / "first_frame.png")
        (folder / "prompt.txt").write_text(PROMPT + "\n")
        (folder / "metadata.json").write_text("{}")
    no_prompt, too_small = (root / k for k in BAD)
    no_prompt.mkdir(parents=True)
    draw_first_frame(64).save(no_prompt / "first_frame.png")
    too_small.mkdir(parents=True)
    draw_first_frame(16).save(too_small / "first_frame.png")
    (too_small / "prompt.txt").write_text(PROMPT)
    return root


@pytest.fixture(scope="module")
def models():
    return ensure_tiny_models()


@pytest.fixture(scope="module")
def server(tmp_path_factory, models):
    srv = LocalComfy(base_dir=tmp_path_factory.mktemp("bench-server"), models_dir=models)
    srv.start(timeout=180)
    yield srv
    srv.stop()


def summary_of(out: Path, method: str) -> dict:
    return json.loads((out / method / "summary.json").read_text())


def records(summary: dict) -> dict:
    return {r["task"]: r for r in summary["tasks"]}


def frame_count(path: Path) -> tuple[int, tuple]:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return len(frames), frames[0].shape


def bench_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    """`python -m tto_runner.bench ...` as a user runs it (stdout/stderr captured)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "tto_runner.bench", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------- real servers


def test_templates_match_the_servers_nodes(server):
    """Every input a template sets is one its node declares, and every link points at a real output."""
    info = requests.get(server.url + "/object_info", timeout=60).json()
    for path in sorted(TEMPLATE_DIR.glob("*.json")):
        template = json.loads(path.read_text())
        for node_id, node in template.items():
            spec = info[node["class_type"]]
            declared = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
            for name, value in node["inputs"].items():
                assert name in declared, f"{path.name} node {node_id}: {node['class_type']} has no input {name}"
                if isinstance(value, list):
                    source = template[value[0]]["class_type"]
                    assert value[1] < len(info[source]["output"]), f"{path.name} node {node_id}.{name}"
            required = set(spec["input"].get("required", {}))
            missing = required - set(node["inputs"])
            assert not missing, f"{path.name} node {node_id} misses {missing}"


def test_baseline_with_its_own_local_server_then_resume(task_tree, tmp_path, models):
    out = tmp_path / "out"
    t0 = time.monotonic()
    run = bench_cli("--tasks", task_tree, "--method", "baseline", "--out", out, "--seed", 3)
    first_s = time.monotonic() - t0
    assert run.returncode == 0, run.stderr
    assert "starting a local ComfyUI" in run.stderr
    summary = summary_of(out, "baseline")
    recs = records(summary)
    assert set(recs) == set(GOOD) | set(BAD)
    assert summary["counts"] == {"done": 4, "invalid": 2} and summary["settings"] == {"seed": 3}
    for task_id in GOOD:
        video = out / "baseline" / f"{task_id}.mp4"   # <split>/<task>/00000 -> <split>/<task>/00000.mp4
        assert frame_count(video) == (9, (64, 64, 3))
        r = recs[task_id]
        assert r["status"] == "done" and r["attempts"] == 1 and r["error"] is None
        assert r["video"] == f"{task_id}.mp4" and r["seconds"] > 0 and r["server"].startswith("http://127.0.0.1:")
        assert r["cost"]["reasoner_forward"] == 4 and r["cost"]["teacher_forward"] == 0
    for task_id, why in BAD.items():
        assert recs[task_id]["status"] == "invalid" and why in recs[task_id]["error"]
        assert not (out / "baseline" / f"{task_id}.mp4").exists()
    assert sorted(p.relative_to(out / "baseline").as_posix() for p in (out / "baseline").rglob("*.mp4")) == \
        sorted(f"{t}.mp4" for t in GOOD)
    mtimes = {t: (out / "baseline" / f"{t}.mp4").stat().st_mtime_ns for t in GOOD}

    t0 = time.monotonic()
    again = bench_cli("--tasks", task_tree, "--method", "baseline", "--out", out, "--seed", 3)
    second_s = time.monotonic() - t0
    assert again.returncode == 0, again.stderr
    assert "4 already done, 0 to run" in again.stderr and "starting a local ComfyUI" not in again.stderr
    assert second_s < 10 and second_s < first_s / 2
    assert {t: (out / "baseline" / f"{t}.mp4").stat().st_mtime_ns for t in GOOD} == mtimes
    assert records(summary_of(out, "baseline"))[GOOD[0]]["prompt_id"] == recs[GOOD[0]]["prompt_id"]

    # A lost video is run again, and so is everything under other settings (another experiment). The server
    # named here does not exist, so each run stops after planning.
    (out / "baseline" / f"{GOOD[1]}.mp4").unlink()
    nowhere = "http://127.0.0.1:9"
    plan = bench_cli("--tasks", task_tree, "--method", "baseline", "--out", out, "--seed", 3, "--server", nowhere)
    assert "3 already done, 1 to run" in plan.stderr and plan.returncode == 2
    assert "no usable server" in plan.stderr
    plan = bench_cli("--tasks", task_tree, "--method", "baseline", "--out", out, "--seed", 4, "--server", nowhere)
    assert "0 already done, 4 to run" in plan.stderr and plan.returncode == 2


def test_tto_on_a_running_server(task_tree, tmp_path, server):
    out = tmp_path / "out"
    code = main(["--tasks", str(task_tree), "--method", "tto", "--out", str(out), "--server", server.url,
                 "--max-iterations", "2", "--learning-rate", "0.02", "--loss-threshold", "0.0", "--frames", "4"])
    assert code == 0
    recs = records(summary_of(out, "tto"))
    for task_id in GOOD:
        r = recs[task_id]
        assert r["status"] == "done" and r["server"] == server.url
        assert r["iterations"] == 2 and r["stop_reason"] == "max_iterations"
        assert isinstance(r["final_loss"], float) and isinstance(r["first_loss"], float)
        assert len(r["scores"]) >= 2 and all(0.0 <= s["score"] <= 1.0 for s in r["scores"])
        cost = r["cost"]
        assert cost["teacher_generate"] == 1 and cost["teacher_forward"] == 2 and cost["teacher_backward"] == 1
        assert cost["reasoner_forward"] >= 4 + 2 and cost["wall_s"] > 0
        loop = r["reports"]["TTOLoop"]  # --frames reached the loop (the linear map decodes 3 frames here)
        assert loop["teacher_frames"] == min(4, loop["decoded_frames"])
        assert frame_count(out / "tto" / f"{task_id}.mp4") == (9, (64, 64, 3))
    assert all(recs[t]["status"] == "invalid" for t in BAD)


@pytest.mark.parametrize("method,extra", [("best_of_n", ["--n", "2", "--frames", "4"]), ("solver", [])])
def test_baselines_on_a_running_server(task_tree, tmp_path, server, method, extra):
    out = tmp_path / "out"
    code = main(["--tasks", str(task_tree), "--method", method, "--out", str(out), "--server", server.url,
                 "--limit", "1", *extra])
    assert code == 0
    r = records(summary_of(out, method))[GOOD[0]]
    assert r["status"] == "done" and frame_count(out / method / f"{GOOD[0]}.mp4")[0] == 9
    assert r["cost"]["teacher_generate"] == 1
    if method == "best_of_n":
        assert r["cost"]["samples"] == 2 and [c["seed"] for c in r["candidates"]] == [0, 1]
        assert r["best_seed"] in (0, 1) and r["scores"]
    else:
        assert isinstance(r["rewritten_prompt"], str)


def test_a_prompt_the_server_rejects_fails_after_two_attempts(task_tree, tmp_path, server):
    template = json.loads((TEMPLATE_DIR / "baseline_tiny.json").read_text())
    unet = next(k for k, v in template.items() if v["class_type"] == "UNETLoader")
    template[unet]["inputs"]["unet_name"] = "no_such_model.safetensors"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(template))
    out = tmp_path / "out"
    code = main(["--tasks", str(task_tree), "--method", "baseline", "--workflow", str(broken), "--out", str(out),
                 "--server", server.url, "--limit", "2"])
    assert code == 1
    recs = records(summary_of(out, "baseline"))
    assert len(recs) == 2
    for r in recs.values():
        assert r["status"] == "failed" and r["attempts"] == 2 and "no_such_model" in r["error"]
        assert len(r["attempt_log"]) == 2
    assert not list((out / "baseline").rglob("*.mp4"))


def test_a_video_that_cannot_be_written_fails_the_task_and_keeps_the_server(task_tree, tmp_path, server):
    out = tmp_path / "out"
    (out / "baseline").mkdir(parents=True)
    (out / "baseline" / GOOD[0].split("/")[0]).write_text("a file where the split's folder should be")
    code = main(["--tasks", str(task_tree), "--method", "baseline", "--out", str(out), "--server", server.url,
                 "--limit", "1"])
    assert code == 1
    summary = summary_of(out, "baseline")
    r = records(summary)[GOOD[0]]
    assert r["status"] == "failed" and r["attempts"] == 1 and len(r["attempt_log"]) == 1
    assert "local problem, not the server's" in r["error"] and "server error" not in r["error"]
    assert summary["servers"] == [{"url": server.url, "status": "ok", "error": None, "tasks_done": 0}]


def test_a_task_past_its_timeout_is_taken_off_the_server_and_retried(task_tree, tmp_path, server):
    out = tmp_path / "out"
    code = main(["--tasks", str(task_tree), "--method", "tto", "--out", str(out), "--server", server.url,
                 "--limit", "1", "--seed", "12345", "--max-iterations", "2", "--timeout", "0.01",
                 "--max-attempts", "2"])
    assert code == 1
    r = records(summary_of(out, "tto"))[GOOD[0]]
    assert r["status"] == "failed" and r["attempts"] == 2 and "not finished after 0.01 s" in r["error"]
    assert [a["server"] for a in r["attempt_log"]] == [server.url] * 2
    deadline = time.monotonic() + 60   # nothing of ours is left queued or running on the server
    while time.monotonic() < deadline:
        state = requests.get(server.url + "/queue", timeout=5).json()
        if not state["queue_running"] and not state["queue_pending"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"prompts left on the server: {state}")


@pytest.mark.parametrize("failure", ["killed", "hung"])
def test_a_server_lost_mid_run_loses_no_task(task_tree, tmp_path, server, models, failure):
    """Two servers; one dies (SIGKILL) or hangs (SIGSTOP) while it runs a task. That task moves to the
    other server, the lost server is dropped, and every task finishes."""
    victim = LocalComfy(base_dir=tmp_path / "victim", models_dir=models)
    victim.start(timeout=180)
    out = tmp_path / "out"
    result = {}
    argv = ["--tasks", str(task_tree), "--method", "tto", "--out", str(out), "--server", victim.url,
            "--server", server.url, "--max-iterations", "2", "--frames", "4", "--timeout", "300",
            "--request-timeout", "2"]
    runner = threading.Thread(target=lambda: result.setdefault("code", main(argv)), daemon=True)
    pid = victim.proc.pid
    try:
        runner.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the victim is running one of our prompts
            if requests.get(victim.url + "/queue", timeout=5).json()["queue_running"]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the victim server never ran a prompt")
        os.kill(pid, signal.SIGKILL if failure == "killed" else signal.SIGSTOP)
        runner.join(timeout=240)
        assert not runner.is_alive(), "tto-bench did not finish after losing a server"
    finally:
        if failure == "hung":
            os.kill(pid, signal.SIGCONT)
        victim.stop()
    assert result["code"] == 0
    summary = summary_of(out, "tto")
    recs = records(summary)
    assert summary["counts"] == {"done": 4, "invalid": 2}
    servers = {s["url"]: s for s in summary["servers"]}
    assert servers[victim.url]["status"] == "dropped" and "stopped answering" in servers[victim.url]["error"]
    assert servers[server.url]["status"] == "ok" and servers[server.url]["tasks_done"] == 4
    moved = [recs[t] for t in GOOD if recs[t]["attempts"] > 1]
    assert len(moved) == 1
    assert moved[0]["attempts"] == 2 and moved[0]["server"] == server.url
    assert moved[0]["attempt_log"][0]["server"] == victim.url and "server error" in moved[0]["attempt_log"][0]["error"]
    for task_id in GOOD:
        assert recs[task_id]["status"] == "done"
        assert frame_count(out / "tto" / f"{task_id}.mp4")[0] == 9
