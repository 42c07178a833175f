"""The harness itself, against a real ComfyUI server (subprocess) and the real frontend (headless Chromium).

Only stock nodes run here, so these tests say whether the harness works independently of the pack's own
nodes; whether the pack imports is checked separately (test_pack_imports).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from tto_runner import (PACK_NAME, REPO_ROOT, ComfyClient, LocalComfy, PromptFailed, PromptInterrupted,
                        PromptRejected, ServerStartError)

BROKEN = "tto-harness-broken-node"  # a custom node that fails to import on purpose
MISSING = "TTOHarnessNoSuchNode"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    (models / "LLM" / "tto-dummy-teacher").mkdir(parents=True)
    (models / "LLM" / "tto-dummy-teacher" / "config.json").write_text("{}")
    (models / "conditioning").mkdir()
    (models / "conditioning" / "tto_dummy.safetensors").write_bytes(b"")
    (models / "diffusion_models").mkdir()
    # Listed (so the prompt validates) but not loadable: a runtime failure on demand.
    (models / "diffusion_models" / "tto_not_a_model.safetensors").write_bytes(b"this is not safetensors")
    return models


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_dir):
    base = tmp_path_factory.mktemp("comfy")
    broken = base / "custom_nodes" / BROKEN
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('tto harness: deliberately broken node pack')\n")
    # The pack is checked by its own test below, so a broken pack does not hide the harness results.
    srv = LocalComfy(base_dir=base, models_dir=models_dir, check_pack=False)
    srv.start(timeout=120)
    print(f"\nComfyUI ready in {srv.start_seconds:.1f} s at {srv.url}")
    yield srv
    srv.stop()
    assert not srv.running


@pytest.fixture(scope="module")
def client(server):
    with ComfyClient(server.url) as c:
        yield c


def stock_prompt(color: int, prefix: str = "tto_harness") -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def stock_ui_workflow(middle_type: str = "ImageInvert") -> dict:
    """EmptyImage -> (middle) -> SaveImage in the frontend's saved-workflow format (version 0.4)."""
    return {
        "last_node_id": 3, "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "EmptyImage", "pos": [50, 100], "size": [315, 130], "flags": {}, "order": 0,
             "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0}],
             "properties": {"Node name for S&R": "EmptyImage"}, "widgets_values": [64, 48, 1, 4210752]},
            {"id": 2, "type": middle_type, "pos": [420, 100], "size": [210, 26], "flags": {}, "order": 1,
             "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2], "slot_index": 0}],
             "properties": {"Node name for S&R": middle_type}, "widgets_values": []},
            {"id": 3, "type": "SaveImage", "pos": [700, 100], "size": [315, 270], "flags": {}, "order": 2,
             "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": [],
             "properties": {"Node name for S&R": "SaveImage"}, "widgets_values": ["tto_harness_ui"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


# ---------------------------------------------------------------------------------------------- server


def test_server_layout_and_log(server):
    assert server.running and server.url.startswith("http://127.0.0.1:")
    link = server.base_dir / "custom_nodes" / PACK_NAME
    assert link.is_symlink() and link.resolve() == REPO_ROOT
    for name in ("models", "input", "output", "temp", "user"):
        assert (server.base_dir / name).is_dir()
    log = server.log_text()
    assert "--database-url sqlite:///:memory:" in log and "--preview-method none" in log
    assert "To see the GUI go to" in log
    assert str(server.log_path) == str(server.base_dir / "comfyui.log")


def test_start_failure_reports_the_log(tmp_path):
    srv = LocalComfy(base_dir=tmp_path / "dead", extra_args=["--tto-no-such-flag"])
    with pytest.raises(ServerStartError) as failed:
        srv.start(timeout=60)
    assert "exited with code" in str(failed.value) and "--tto-no-such-flag" in str(failed.value)
    assert not srv.running


def test_import_failures_are_detected(server):
    problem = server.import_problem(BROKEN)
    assert problem is not None, server.log_tail()
    assert "deliberately broken node pack" in problem and "IMPORT FAILED" in problem
    assert any(BROKEN in line for line in server.import_failures())
    assert server.import_problem("no-such-node-folder") is None


def test_pack_imports(server):
    if not (REPO_ROOT / "__init__.py").exists():
        pytest.skip("the pack has no __init__.py (comfy_entrypoint) yet")
    problem = server.pack_import_problem()
    assert problem is None, f"{PACK_NAME} failed to import:\n{problem}"


def test_object_info_has_stock_nodes(client):
    info = client.object_info()
    for name in ("KSampler", "UNETLoader", "VAELoader", "Wan22ImageToVideoLatent", "SaveImage", "EmptyImage"):
        assert name in info, name
    assert "latent" in client.object_info("Wan22ImageToVideoLatent")["Wan22ImageToVideoLatent"]["output_name"][0].lower()


def test_model_paths_yaml(server, client, models_dir):
    text = server.model_paths_yaml.read_text()
    assert str(models_dir) in text
    assert "tto-dummy-teacher/config.json" in client.models("LLM")
    assert "tto_dummy.safetensors" in client.models("conditioning")
    assert "tto_not_a_model.safetensors" in client.models("diffusion_models")


# ---------------------------------------------------------------------------------------------- prompts


def test_stock_prompt_end_to_end(client, tmp_path):
    color = 0x102030
    prompt_id, entry = client.run(stock_prompt(color), timeout=60)
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"]
    files = client.output_files(entry)
    assert len(files) == 1 and files[0]["type"] == "output" and files[0]["filename"].endswith(".png")
    path = client.download(files[0], tmp_path)
    with Image.open(path) as im:
        assert im.size == (64, 48)
        assert im.convert("RGB").getpixel((5, 5)) == (0xFF - 0x10, 0xFF - 0x20, 0xFF - 0x30)
    assert client.queue_state() == {"queue_running": [], "queue_pending": []}
    # The same output node through wait(): the summary carries the `executed` UI output.
    pid = client.queue(stock_prompt(color + 1))
    summary = client.wait(pid, timeout=60)
    assert summary["status"] == "success" and "3" in summary["executed"]
    assert summary["executed"]["3"]["images"][0]["filename"].endswith(".png")
    assert client.progress[pid] == []  # stock image nodes report no progress


def test_upload_image_round_trip(client, tmp_path):
    src = tmp_path / "tto upload.png"
    Image.new("RGB", (40, 24), (200, 100, 50)).save(src)
    name = client.upload_image(src)
    assert name == "tto upload.png"
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "tto_up"}}}
    _, entry = client.run(prompt, timeout=60)
    (out,) = client.output_files(entry)
    with Image.open(client.download(out, tmp_path / "dl")) as im:
        assert im.size == (40, 24) and im.convert("RGB").getpixel((3, 3)) == (200, 100, 50)


def test_rejected_prompts_and_server_survives(client):
    with pytest.raises(PromptRejected) as unknown:
        client.queue({"1": {"class_type": MISSING, "inputs": {}}})
    assert unknown.value.status == 400
    assert unknown.value.error["type"] == "invalid_prompt" and MISSING in str(unknown.value)

    bad = stock_prompt(0)
    del bad["1"]["inputs"]["width"]
    with pytest.raises(PromptRejected) as missing_input:
        client.queue(bad)
    errors = missing_input.value.node_errors["1"]["errors"]
    assert errors[0]["type"] == "required_input_missing" and "width" in json.dumps(errors)
    assert "node 1 (EmptyImage)" in str(missing_input.value)

    _, entry = client.run(stock_prompt(7), timeout=60)
    assert entry["status"]["status_str"] == "success"


def test_runtime_failure_raises_prompt_failed(client):
    prompt = {"1": {"class_type": "UNETLoader",
                    "inputs": {"unet_name": "tto_not_a_model.safetensors", "weight_dtype": "default"}},
              "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "tto_never"}}}
    with pytest.raises(PromptFailed) as failed:
        client.run(prompt, timeout=60)
    err = failed.value
    assert err.node_id == "1" and err.node_type == "UNETLoader"
    assert err.exception_message and "Traceback" not in err.exception_message
    assert "load" in err.traceback.lower()
    _, entry = client.run(stock_prompt(8), timeout=60)
    assert entry["status"]["status_str"] == "success"


def test_interrupt_then_next_prompt_runs(client):
    slow = {  # the blur takes about a second on CPU; interrupting during it stops before the next node
        "1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 384, "batch_size": 4, "color": 99}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 5.0}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "tto_never"}},
    }
    seen = []

    def on_message(kind, data):
        seen.append(kind)
        if kind == "executing" and data.get("node") == "2":
            client.interrupt()

    t0 = time.monotonic()
    with pytest.raises(PromptInterrupted) as interrupted:
        client.run(slow, timeout=60, on_message=on_message)  # listens from before the prompt is queued
    prompt_id = interrupted.value.prompt_id
    assert interrupted.value.node_id in ("2", "3")
    assert "execution_start" in seen
    assert time.monotonic() - t0 < 30
    entry = {}
    for _ in range(100):  # the server writes history just after it announces the interruption
        entry = client.history(prompt_id)
        if entry.get("status"):
            break
        time.sleep(0.1)
    assert entry["status"]["status_str"] == "error" and not entry["outputs"].get("4")

    client.interrupt()  # with nothing running: must not poison the next prompt
    _, entry = client.run(stock_prompt(9), timeout=60)
    assert entry["status"]["status_str"] == "success" and client.output_files(entry)
    assert client.queue_state()["queue_running"] == []


def test_restart_keeps_url(server, client):
    url = server.url
    server.restart()
    assert server.url == url and server.running
    assert "KSampler" in client.object_info()
    _, entry = client.run(stock_prompt(10), timeout=60)
    assert entry["status"]["status_str"] == "success"


# ---------------------------------------------------------------------------------------------- frontend

needs_chromium = pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"),
                                    reason="/usr/bin/chromium missing: run scripts/install_browser.sh")


@needs_chromium
def test_frontend_loads_stock_workflow_and_flags_missing_nodes(server, client, tmp_path):
    from tto_runner.frontend import FrontendSession, check_workflow_in_browser

    wf_path = tmp_path / "stock.json"
    wf_path.write_text(json.dumps(stock_ui_workflow()))
    report = check_workflow_in_browser(server.url, wf_path, tmp_path / "stock.png", node_types=["KSampler"])
    print("frontend console errors on a clean load:", report["console_errors"])
    assert report["missing_node_types"] == [] and not report["missing_dialog_shown"]
    assert report["page_errors"] == []
    assert report["node_count"] == 3 and report["link_count"] == 2 and report["error_nodes"] == []
    assert report["registered"] == {"EmptyImage": True, "ImageInvert": True, "SaveImage": True, "KSampler": True}
    assert report["widget_mismatches"] == []
    assert all(not u.startswith("http://127.0.0.1") for u in report["blocked_requests"])
    png = Path(report["screenshot"])
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 600
    # What the frontend would queue is a valid prompt that runs.
    api = report["api_prompt"]
    assert {n["class_type"] for n in api.values()} == {"EmptyImage", "ImageInvert", "SaveImage"}
    _, entry = client.run(api, timeout=60)
    assert entry["status"]["status_str"] == "success" and client.output_files(entry)

    # A made-up node type must be reported, by our registry check and by the app itself.
    with FrontendSession(server.url) as session:
        bad = session.check(stock_ui_workflow(MISSING), tmp_path / "missing.png")
        assert bad["missing_node_types"] == [MISSING]
        assert bad["missing_reported_by_app"] == [MISSING] and bad["missing_dialog_shown"]
        assert bad["registered"][MISSING] is False
        assert [n["type"] for n in bad["error_nodes"]] == [MISSING]
        assert bad["page_errors"] == []
        again = session.check(stock_ui_workflow(), None)  # a session can go on after a bad workflow
        assert again["missing_node_types"] == [] and again["node_count"] == 3


@needs_chromium
def test_frontend_thumbnail_frames_the_whole_graph(server, tmp_path):
    from tto_runner.frontend import THUMBNAIL_SETTINGS, FrontendSession

    with FrontendSession(server.url, settings=THUMBNAIL_SETTINGS) as session:
        report = session.thumbnail(stock_ui_workflow(), tmp_path / "stock.jpg", width=320)
    assert report["node_count"] == 3 and report["page_errors"] == []
    with Image.open(tmp_path / "stock.jpg") as im:
        assert im.format == "JPEG" and im.size == (320, 180)  # the 1600x900 page, scaled
        gray = im.convert("L")
        background = gray.getpixel((2, 2))
        drawn = gray.point(lambda v: 255 if abs(v - background) > 12 else 0)
    assert drawn.getbbox() is not None
    left, top, right, bottom = drawn.getbbox()
    assert right - left > 0.8 * 320, drawn.getbbox()  # zoomed to fit: the three nodes span the picture's width
    for x, y in [(0, 0), (304, 0), (0, 164), (304, 164)]:  # no canvas info, menu or button in the corners
        assert drawn.crop((x, y, x + 16, y + 16)).getbbox() is None, (x, y)
