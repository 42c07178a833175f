"""How users really wire the loop, on the tiny models in a real server: fp8 weights from UNETLoader, a
step-distillation LoRA loaded before LoRAAttach, and the memory presets (which must not change results)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from tto_runner import ComfyClient, LocalComfy
from tto_runner.demo import TINY_DEMO, ensure_tiny_models, write_demo_inputs

LOOP, UNET, ATTACH = "12", "1", "11"


def stock_lora(path, seed=0, rank=4, dim=128, layers=2):
    """A small LoRA for the tiny Wan in ComfyUI's key format, as a distillation LoRA would come."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(layers):
        for target in ("self_attn.q", "self_attn.v", "ffn.0"):
            key = f"diffusion_model.blocks.{i}.{target}"
            out_features = 256 if target == "ffn.0" else dim
            state[f"{key}.lora_down.weight"] = torch.randn(rank, dim, generator=g) * 0.5
            state[f"{key}.lora_up.weight"] = torch.randn(out_features, rank, generator=g) * 0.5
            state[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(path))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("user-setups")
    models = root / "models"
    tiny = ensure_tiny_models()
    models.mkdir()
    for entry in tiny.iterdir():
        if entry.is_dir():
            os.symlink(entry, models / entry.name)
    (models / "loras").mkdir()
    stock_lora(models / "loras" / "distill_tiny.safetensors")
    write_demo_inputs(root / "server" / "input")
    with LocalComfy(base_dir=root / "server", models_dir=models) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with ComfyClient(server.url) as c:
        yield c


def loop_prompt(prefix: str, **loop_inputs) -> dict:
    """The tiny demo with a short loop, saving the final latent and the LoRA under `prefix`. (Each test uses
    its own seed: the server caches a node whose inputs it has seen, and reports no output for it.)"""
    prompt = json.loads(TINY_DEMO.read_text())
    prompt[LOOP]["inputs"].update(max_iterations=3, **loop_inputs)
    prompt[LOOP]["inputs"].pop("loop_decoder")
    for node in ("13", "14", "15", "16", "18"):
        prompt.pop(node)
    prompt["17"]["inputs"]["prefix"] = f"loras/{prefix}"
    prompt["30"] = {"class_type": "SaveLatent", "inputs": {"samples": [LOOP, 1], "filename_prefix": prefix}}
    return prompt


def with_stock_lora(prompt: dict) -> dict:
    prompt["31"] = {"class_type": "LoraLoaderModelOnly",
                    "inputs": {"model": [UNET, 0], "lora_name": "distill_tiny.safetensors", "strength_model": 1.0}}
    prompt[ATTACH]["inputs"]["model"] = ["31", 0]
    return prompt


def run(client, prompt) -> dict:
    _, history = client.run(prompt, timeout=900)
    return json.loads(history["outputs"][LOOP]["text"][0])


def latest(server, pattern):
    return max((server.base_dir / "output").rglob(pattern), key=lambda p: p.stat().st_mtime)


def saved_latent(server, prefix) -> torch.Tensor:
    return load_file(str(latest(server, f"{prefix}_*.latent")))["latent_tensor"]


def stock_resample(server, client, prefix: str, loras: list[str]) -> torch.Tensor:
    """UNETLoader -> LoraLoaderModelOnly per file -> stock KSampler, same seed: the final latent as a user
    would reproduce it later."""
    prompt = json.loads(TINY_DEMO.read_text())
    keep = {k: v for k, v in prompt.items() if k in ("1", "2", "4", "5", "6", "7")}
    model = ["1", 0]
    for i, name in enumerate(loras):
        keep[f"4{i}"] = {"class_type": "LoraLoaderModelOnly",
                         "inputs": {"model": model, "lora_name": name, "strength_model": 1.0}}
        model = [f"4{i}", 0]
    loop = prompt[LOOP]["inputs"]
    keep["50"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["7", 0], "seed": loop["seed"],
        "steps": loop["steps"], "cfg": loop["cfg"], "sampler_name": loop["sampler_name"],
        "scheduler": loop["scheduler"], "denoise": 1.0}}
    keep["51"] = {"class_type": "SaveLatent", "inputs": {"samples": ["50", 0], "filename_prefix": prefix}}
    client.run(keep, timeout=900)
    return saved_latent(server, prefix)


def saved_lora_name(server, prefix) -> str:
    path = latest(server, f"{prefix}_*.safetensors")
    return path.relative_to(server.base_dir / "output" / "loras").as_posix()


def test_a_stock_lora_loaded_first_acts_in_the_loop_and_the_saved_lora_reproduces_on_top(server, client):
    plain = run(client, loop_prompt("plain"))
    distilled = run(client, with_stock_lora(loop_prompt("distilled")))
    assert distilled["first_loss"] != plain["first_loss"]  # the loop predicted with the stock LoRA applied
    # models/loras is where LoraLoaderModelOnly looks, and SaveLoRA wrote the loop's LoRA to output/loras:
    # link it in, then load the stock LoRA and the loop's LoRA on top, as a user would
    name = saved_lora_name(server, "distilled")
    link = server.models_dir / "loras" / "loop_on_distill.safetensors"
    link.symlink_to(server.base_dir / "output" / "loras" / name)
    again = stock_resample(server, client, "reproduced", ["distill_tiny.safetensors", "loop_on_distill.safetensors"])
    assert torch.equal(again, saved_latent(server, "distilled"))
    without = stock_resample(server, client, "without_loop", ["distill_tiny.safetensors"])
    assert not torch.equal(without, again)


def test_fp8_weights_as_unetloader_loads_them(server, client):
    prompt = loop_prompt("fp8", seed=43)
    prompt[UNET]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    report = run(client, prompt)
    assert report["iterations"] == 3 and all(loss is not None for loss in report["loss_curve"])
    full = run(client, loop_prompt("full_precision", seed=43))
    assert report["first_loss"] != full["first_loss"]  # the fp8 weights really were used
    lora = load_file(str(latest(server, "fp8_*.safetensors")))
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in lora.values())


def test_the_24gb_preset_gives_the_same_result(server, client):
    default = run(client, loop_prompt("preset_default", memory="default", seed=44))
    low_memory = run(client, loop_prompt("preset_24gb", memory="24gb", seed=44))
    assert low_memory["iterations"] == default["iterations"]
    assert low_memory["loss_curve"] == pytest.approx(default["loss_curve"], rel=1e-5)
    a = load_file(str(latest(server, "preset_default_*.safetensors")))
    b = load_file(str(latest(server, "preset_24gb_*.safetensors")))
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-7) for k in a)
