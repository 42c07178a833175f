"""The pack inside a real headless ComfyUI (subprocess, HTTP + websocket) and the real frontend."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path

import av
import pytest
import requests
import torch
from PIL import Image
from safetensors.torch import load_file

from tto_runner import PACK_NAME, REPO_ROOT, ComfyClient, LocalComfy, PromptFailed, PromptInterrupted, PromptRejected
from tto_runner.demo import TINY_DEMO, ensure_tiny_models, write_demo_inputs, write_task_video
from tto_runner.example_workflows import (TEMPLATE_DIR, TEMPLATE_TITLES, THUMBNAIL_WIDTH, api_path, thumbnail_path,
                                          ui_path, untitled_api_files)
from tto_runner.frontend import CHROMIUM, FrontendSession
from tto_runner.tools import NEWEST_FRONTEND, frontend_root
from tto_runner.workflow_format import overlapping_nodes, ui_to_api

PACK_NODES = ["VLMTeacherLoader", "TeacherAnalyze", "RewardQuery", "VLMScore", "LoRAAttach", "TTOLoop",
              "LoadConditioningFile", "BestOfNSample", "TeacherRewritePrompt", "TAEHVImageToVideoLatent"]
ARTIFACTS = REPO_ROOT / ".artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("pack-host")
    write_demo_inputs(base / "input")
    write_task_video(base / "input" / "task_video.mp4")
    srv = LocalComfy(base_dir=base, models_dir=ensure_tiny_models())
    srv.start(timeout=180)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with ComfyClient(server.url) as c:
        yield c


def node_of(prompt, class_type):
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


def demo_prompt(fast=True, **loop_inputs):
    """The shipped tiny demo; `fast` drops the TAEHV loop decoder (linear RGB map) and shortens the loop."""
    prompt = json.loads(TINY_DEMO.read_text())
    loop = prompt[node_of(prompt, "TTOLoop")]["inputs"]
    if fast:
        loop.pop("loop_decoder")
        loop["max_iterations"] = 3
    loop.update(loop_inputs)
    return prompt


def stock_sample(prompt_source: dict, seed: int, prefix: str, lora: str | None = None) -> dict:
    """UNETLoader -> (LoraLoaderModelOnly) -> KSampler -> SaveLatent, reusing the demo's loaders."""
    keep = ("UNETLoader", "VAELoader", "LoadImage", "LoadConditioningFile", "ConditioningZeroOut",
            "Wan22ImageToVideoLatent")
    prompt = {k: v for k, v in prompt_source.items() if v["class_type"] in keep}
    unet, cond = node_of(prompt, "UNETLoader"), node_of(prompt, "LoadConditioningFile")
    model = [unet, 0]
    if lora:
        prompt["100"] = {"class_type": "LoraLoaderModelOnly",
                         "inputs": {"model": model, "lora_name": lora, "strength_model": 1.0}}
        model = ["100", 0]
    prompt["101"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": seed, "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": [cond, 0], "negative": [node_of(prompt, "ConditioningZeroOut"), 0],
        "latent_image": [node_of(prompt, "Wan22ImageToVideoLatent"), 0], "denoise": 1.0}}
    prompt["102"] = {"class_type": "SaveLatent", "inputs": {"samples": ["101", 0], "filename_prefix": prefix}}
    return prompt


def saved_latent(server, prefix) -> torch.Tensor:
    path = sorted((server.base_dir / "output").glob(f"{prefix}*.latent"))[-1]
    return load_file(str(path))["latent_tensor"]


def test_pack_nodes_are_registered_and_documented(client):
    info = client.object_info()
    for node in PACK_NODES:
        assert node in info, f"{node} missing from /object_info"
        assert info[node]["description"], f"{node} has no description"
        for section in ("required", "optional"):
            for name, spec in info[node]["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    assert "tiny-qwen3-vl" in info["VLMTeacherLoader"]["input"]["required"]["model_name"][1]["options"]


def test_tiny_demo_workflow_end_to_end(client, server, tmp_path):
    prompt = json.loads(TINY_DEMO.read_text())  # exactly as shipped
    loop = node_of(prompt, "TTOLoop")
    budget = prompt[loop]["inputs"]["max_iterations"]
    progress = []
    _, history = client.run(prompt, timeout=900, on_message=lambda kind, data: progress.append(data)
                            if kind == "progress" else None)
    assert history["status"]["status_str"] == "success"

    loop_progress = [p["value"] for p in progress if str(p["node"]) == loop and p["max"] == budget]
    assert loop_progress == list(range(1, budget + 1))  # one progress step per iteration

    files = {f["filename"]: f for f in client.output_files(history)}
    video = client.download(next(f for n, f in files.items() if n.endswith(".mp4")), tmp_path)
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (64, 64, 3)  # length 9 -> 3 latent frames -> 9 frames
    curve = client.download(next(f for n, f in files.items() if n.startswith("reward_curve")), tmp_path)
    assert Image.open(curve).size == (640, 420)

    report = json.loads(history["outputs"][loop]["text"][0])
    assert report["iterations"] == budget and report["stop_reason"] == "max_iterations"
    assert report["final_loss"] < report["first_loss"]
    assert len(report["queries"]) >= 3  # teacher (or fallback) queries + the user's RewardQuery
    assert report["decoded_frames"] == 9 and report["teacher_frames"] == 8  # TAEHV decodes 9; K = 8

    lora = sorted((server.base_dir / "output" / "loras").glob("vlm_teacher_demo_*.safetensors"))[-1]
    state = load_file(str(lora))
    assert state and all(k.startswith("diffusion_model.blocks.") for k in state)
    assert {k.rsplit(".", 2)[-2] if k.endswith(".weight") else "alpha" for k in state} == {
        "lora_up", "lora_down", "alpha"}
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(curve, ARTIFACTS / "reward_curve_tiny_demo.png")


def test_stock_lora_loader_and_ksampler_reproduce_the_final_sample(client, server):
    prompt = demo_prompt(seed=42)
    loop = node_of(prompt, "TTOLoop")
    prompt["200"] = {"class_type": "SaveLatent", "inputs": {"samples": [loop, 1], "filename_prefix": "tto_final"}}
    client.run(prompt, timeout=600)
    trained = sorted((server.base_dir / "output" / "loras").glob("vlm_teacher_demo_*.safetensors"),
                     key=lambda p: p.stat().st_mtime)[-1]
    (server.base_dir / "models" / "loras").mkdir(parents=True, exist_ok=True)
    shutil.copy(trained, server.base_dir / "models" / "loras" / "tto_trained.safetensors")

    client.run(stock_sample(prompt, seed=42, prefix="stock_with_lora", lora="tto_trained.safetensors"))
    assert torch.equal(saved_latent(server, "stock_with_lora"), saved_latent(server, "tto_final"))
    # and the LoRA matters: without it the same seed gives another sample
    client.run(stock_sample(prompt, seed=42, prefix="stock_without_lora"))
    assert not torch.equal(saved_latent(server, "stock_without_lora"), saved_latent(server, "tto_final"))


def test_upstream_model_is_untouched_by_the_loop(client, server):
    reference = stock_sample(demo_prompt(), seed=5, prefix="upstream_ref")
    client.run(reference)
    client.free()  # drop cached outputs, so the check below really samples again

    client.run(demo_prompt(max_iterations=4))  # the loop trains on the cached upstream MODEL
    check = stock_sample(demo_prompt(), seed=5, prefix="upstream_after")
    cached = set()
    client.run(check, timeout=600, on_message=lambda kind, data: cached.update(data.get("nodes", []))
               if kind == "execution_cached" else None)
    assert "101" not in cached and node_of(check, "UNETLoader") in cached  # same MODEL object, new sampling
    assert torch.equal(saved_latent(server, "upstream_after"), saved_latent(server, "upstream_ref"))


def test_interrupt_stops_within_one_iteration_and_the_next_prompt_runs(client, server):
    prompt = demo_prompt(max_iterations=500, loss_threshold=0.0)
    loop = node_of(prompt, "TTOLoop")
    seen, asked_at = [], []

    def on_message(kind, data):
        if kind == "progress" and str(data.get("node")) == loop:
            seen.append(data["value"])
            if data["value"] >= 2 and not asked_at:
                asked_at.append(data["value"])
                client.interrupt()

    with pytest.raises(PromptInterrupted):
        client.run(prompt, timeout=600, on_message=on_message)
    assert asked_at and max(seen) <= asked_at[0] + 1, (seen, asked_at)

    client.run(stock_sample(demo_prompt(), seed=5, prefix="after_interrupt"))
    assert torch.equal(saved_latent(server, "after_interrupt"), saved_latent(server, "upstream_ref"))


def _expect_failure(client, prompt, text):
    with pytest.raises(PromptFailed) as failure:
        client.run(prompt, timeout=600)
    assert text in str(failure.value), str(failure.value)
    assert client.system_stats()  # still serving


def test_bad_inputs_get_clear_messages_and_the_server_keeps_serving(client):
    base = demo_prompt()
    teacher, loop = node_of(base, "VLMTeacherLoader"), node_of(base, "TTOLoop")

    missing_vlm = json.loads(json.dumps(base))
    missing_vlm[teacher]["inputs"]["model_name"] = "no-such-vlm"
    with pytest.raises(PromptRejected) as rejected:
        client.queue(missing_vlm)
    assert "model_name" in rejected.value.describe() and "no-such-vlm" in rejected.value.describe()

    empty_question = json.loads(json.dumps(base))
    empty_question[node_of(base, "RewardQuery")]["inputs"]["question"] = "   "
    with pytest.raises(PromptRejected) as rejected:
        client.queue(empty_question)
    assert "question is empty" in rejected.value.describe()

    no_lora = json.loads(json.dumps(base))
    no_lora[loop]["inputs"]["model"] = [node_of(base, "UNETLoader"), 0]
    _expect_failure(client, no_lora, "Attach Trainable LoRA")

    image_latent = json.loads(json.dumps(base))
    image_latent["300"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    image_latent[loop]["inputs"]["latent"] = ["300", 0]
    _expect_failure(client, image_latent, "video latent")

    rgba = json.loads(json.dumps(base))
    image = node_of(base, "LoadImage")
    rgba["301"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": [image, 0], "alpha": [image, 1]}}
    rgba[node_of(base, "VLMScore")]["inputs"]["images"] = ["301", 0]
    _expect_failure(client, rgba, "RGBA")


def test_score_only_workflow(client):
    prompt = json.loads(api_path("vlm_teacher_score_video").read_text())
    prompt[node_of(prompt, "VLMTeacherLoader")]["inputs"]["model_name"] = "tiny-qwen3-vl"
    _, history = client.run(prompt, timeout=300)
    report = json.loads(history["outputs"][node_of(prompt, "VLMScore")]["text"][0])
    assert 0.0 <= report["score"] <= 1.0 and report["loss"] > 0
    assert report["frames"] == 9  # the clip has 9 frames, fewer than K = 24
    assert [q["kind"] for q in report["queries"]] == ["goal", "process"]


def test_three_paradigms_side_by_side_with_their_cost(client):
    prompt = json.loads(api_path("vlm_teacher_compare_tiny").read_text())
    loop, best_of_n = node_of(prompt, "TTOLoop"), node_of(prompt, "BestOfNSample")
    prompt[loop]["inputs"].update(seed=7, max_iterations=3)
    prompt[best_of_n]["inputs"]["seed"] = 7
    _, history = client.run(prompt, timeout=900)
    outputs = history["outputs"]

    tto = json.loads(outputs[loop]["text"][0])
    steps = prompt[loop]["inputs"]["steps"]
    assert tto["cost"]["reasoner_forward"] == 3 + steps  # one call per iteration + the final sample
    assert tto["cost"]["reasoner_backward"] == tto["cost"]["teacher_backward"] == 2
    assert tto["cost"]["equal_wall_samples"] >= 1 and tto["cost"]["wall_s"] > tto["cost"]["final_sample_s"]

    bon = json.loads(outputs[best_of_n]["text"][0])
    n = prompt[best_of_n]["inputs"]["n"]
    assert [s["seed"] for s in bon["samples"]] == list(range(7, 7 + n))
    assert bon["best_seed"] == min(bon["samples"], key=lambda s: s["loss"])["seed"]
    assert bon["cost"]["samples"] == bon["cost"]["teacher_forward"] == n
    assert bon["cost"]["reasoner_forward"] == n * steps

    solver = json.loads(outputs[node_of(prompt, "TeacherRewritePrompt")]["text"][0])
    assert solver["prompt"].strip() and solver["cost"]["teacher_generate"] == 1
    assert sum(f["filename"].endswith(".mp4") for f in client.output_files(history)) == 2  # TTO and Best-of-N


@pytest.mark.parametrize("stem", TEMPLATE_TITLES)
def test_ui_and_api_workflows_agree(client, stem):
    ui = json.loads(ui_path(stem).read_text())
    assert ui_to_api(ui, client.object_info()) == json.loads(api_path(stem).read_text())
    assert overlapping_nodes(ui) == []


def test_templates_have_thumbnails_and_are_listed_and_served(client, server):
    assert untitled_api_files() == []
    shipped = sorted(p.name for p in TEMPLATE_DIR.iterdir())
    assert shipped == sorted(f"{title}{ext}" for title in TEMPLATE_TITLES.values() for ext in (".json", ".jpg"))
    for stem in TEMPLATE_TITLES:
        with Image.open(thumbnail_path(stem)) as thumbnail:
            assert thumbnail.format == "JPEG" and thumbnail.width == THUMBNAIL_WIDTH
    assert sorted(requests.get(f"{server.url}/workflow_templates", timeout=30).json()[PACK_NAME]) == sorted(
        TEMPLATE_TITLES.values())
    for stem, title in TEMPLATE_TITLES.items():
        # the frontend's URLs: /api/workflow_templates/<pack folder>/<name>.json and .jpg, spaces as they are
        url = f"{server.url}/api/workflow_templates/{PACK_NAME}/{title}"
        served = requests.get(url + ".json", timeout=30)
        assert served.status_code == 200 and served.json() == json.loads(ui_path(stem).read_text())
        picture = requests.get(url + ".jpg", timeout=30)
        assert picture.status_code == 200 and picture.content == thumbnail_path(stem).read_bytes()


def declared_inputs(prompt: dict, object_info: dict) -> dict:
    """A queued prompt as the server reads it: inputs a node does not declare are ignored (the pinned
    frontend sends LoadVideo's preview widget as `video-preview` once the video has loaded)."""
    out = {}
    for key, node in prompt.items():
        spec = object_info[node["class_type"]]["input"]
        names = set(spec.get("required", {})) | set(spec.get("optional", {}))
        out[key] = {"class_type": node["class_type"], "inputs": {k: v for k, v in node["inputs"].items() if k in names}}
    return out


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed "
                                    "(scripts/install_browser.sh installs it)")


@pytest.fixture(scope="module")
def newest_frontend_server(tmp_path_factory):
    """A second server, the same pack and models, serving the newest comfyui-frontend-package."""
    base = tmp_path_factory.mktemp("newest-frontend")
    srv = LocalComfy(base_dir=base, models_dir=ensure_tiny_models(),
                     extra_args=["--front-end-root", str(frontend_root(NEWEST_FRONTEND))])
    srv.start(timeout=180)
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["pinned", "newest"])
def frontend(request, server):
    """A browser page on the host's pinned frontend, then on the newest one; every template loads in both."""
    url = server.url if request.param == "pinned" else request.getfixturevalue("newest_frontend_server").url
    expected = version("comfyui-frontend-package") if request.param == "pinned" else NEWEST_FRONTEND
    with FrontendSession(url) as session:
        yield session, expected


@needs_chromium
@pytest.mark.parametrize("stem", TEMPLATE_TITLES)
def test_ui_workflows_load_in_the_real_frontends(frontend, client, stem):
    session, expected_version = frontend
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / f"{stem}-frontend-{expected_version}.png"
    result = session.check(ui_path(stem), screenshot, node_types=PACK_NODES)
    assert result["frontend_version"] == expected_version
    assert result["missing_node_types"] == []
    assert result["page_errors"] == []
    assert result["widget_mismatches"] == []
    assert result["cut_off_nodes"] == []  # every node has room for all its sockets and widgets
    assert result["node_count"] == len(json.loads(ui_path(stem).read_text())["nodes"])
    # what the frontend itself would queue for this UI file is the shipped API file
    assert declared_inputs(result["api_prompt"], client.object_info()) == json.loads(api_path(stem).read_text())
    assert screenshot.stat().st_size > 0


@needs_chromium
def test_the_frontends_report_a_missing_node_type(frontend):
    session, _ = frontend
    workflow = json.loads(ui_path("vlm_teacher_tiny_demo").read_text())
    workflow["nodes"][0]["type"] = "TTONoSuchNode"
    result = session.check(workflow, node_types=PACK_NODES)
    assert result["missing_node_types"] == ["TTONoSuchNode"]
    assert result["missing_reported_by_app"] == ["TTONoSuchNode"]
