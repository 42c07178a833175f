"""Bad input from API clients, as an attacker and a careless user would send it, through a real server.

Every case must come back either as HTTP 400 with `node_errors` naming the problem, or as an
`execution_error` carrying the pack's own message; never as a raw KeyError / JSONDecodeError; no file
outside the model folders is ever read as a model; and the server keeps serving good prompts.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from tto_runner import ComfyClient, LocalComfy, PromptFailed, PromptRejected
from tto_runner.demo import TINY_DEMO, ensure_tiny_models, write_demo_inputs

GOOD_TEACHER = "tiny-qwen3-vl"


def damaged_copy(source, target, damage):
    shutil.copytree(source, target)
    damage(target)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A models folder with the tiny models (linked in, as users link big checkpoints) and bad entries, and
    a complete teacher OUTSIDE it that no name may reach."""
    root = tmp_path_factory.mktemp("hardening")
    tiny = ensure_tiny_models()
    models = root / "models"
    for sub in ("diffusion_models", "vae", "conditioning", "LLM"):
        (models / sub).mkdir(parents=True)
    for rel in ("diffusion_models/tiny_wan22_ti2v.safetensors", "vae/tiny_wan22_vae.safetensors",
                "vae/tiny_taew2_2.safetensors", "conditioning/tiny_prompt.safetensors", f"LLM/{GOOD_TEACHER}"):
        os.symlink(tiny / rel, models / rel)
    teacher = tiny / "LLM" / GOOD_TEACHER
    llm = models / "LLM"
    damaged_copy(teacher, llm / "truncated-config",
                 lambda f: (f / "config.json").write_text((f / "config.json").read_text()[:50]))
    damaged_copy(teacher, llm / "a-llama", lambda f: (f / "config.json").write_text('{"model_type": "llama"}'))
    damaged_copy(teacher, llm / "pickle-only", lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"))
    damaged_copy(teacher, llm / "no-tokenizer", lambda f: (f / "tokenizer.json").unlink())
    damaged_copy(teacher, llm / "no-template", lambda f: (f / "chat_template.jinja").unlink())
    shutil.copytree(teacher, root / "outside" / "evil-vlm")
    conditioning = models / "conditioning"
    torch.save({"conditioning": torch.zeros(1, 4, 4096)}, conditioning / "pickled.pt")
    save_file({"embedding": torch.zeros(1, 4, 4096)}, str(conditioning / "wrong_key.safetensors"))
    (conditioning / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    save_file({"conditioning": torch.zeros(2, 3, 4, 4096)}, str(conditioning / "wrong_shape.safetensors"))
    return root


@pytest.fixture(scope="module")
def client(world):
    base = world / "server"
    write_demo_inputs(base / "input")
    with LocalComfy(base_dir=base, models_dir=world / "models") as server:
        with ComfyClient(server.url) as c:
            yield c


def demo() -> dict:
    prompt = json.loads(TINY_DEMO.read_text())
    prompt["12"]["inputs"].update(max_iterations=1)
    prompt["12"]["inputs"].pop("loop_decoder")
    return prompt


def with_inputs(node: str, **inputs) -> dict:
    prompt = demo()
    prompt[node]["inputs"].update(inputs)
    return prompt


def score_only(**score_inputs) -> dict:
    """The teacher grading the first frame alone: VLMScore is the prompt's only output. (ComfyUI runs a prompt
    whose other outputs are valid and reports the bad one in node_errors beside a 200.)"""
    prompt = {k: v for k, v in demo().items() if k in ("4", "8", "10", "18")}
    prompt["10"]["inputs"].pop("queries")
    prompt["18"]["inputs"].update(images=["4", 0], **score_inputs)
    return prompt


def compare_outputs(outputs: tuple[str, ...], node: str, **inputs) -> dict:
    """The shipped comparison workflow cut down to the given output nodes and what they need."""
    full = json.loads((TINY_DEMO.parent / "vlm_teacher_compare_tiny.json").read_text())
    keep, todo = set(), list(outputs)
    while todo:
        current = todo.pop()
        if current not in keep:
            keep.add(current)
            todo += [v[0] for v in full[current]["inputs"].values() if isinstance(v, list)]
    prompt = {k: v for k, v in full.items() if k in keep}
    prompt[node]["inputs"].update(inputs)
    return prompt


def taehv_latent(vae_node: str) -> dict:
    """The start image encoded by TAEHVImageToVideoLatent through one of the demo's VAEs, saved as a latent."""
    prompt = {k: v for k, v in demo().items() if k in (vae_node, "4")}
    prompt["30"] = {"class_type": "TAEHVImageToVideoLatent",
                    "inputs": {"vae": [vae_node, 0], "start_image": ["4", 0], "width": 64, "height": 64, "length": 9}}
    prompt["31"] = {"class_type": "SaveLatent", "inputs": {"samples": ["30", 0], "filename_prefix": "hardening/latent"}}
    return prompt


def rejection(client, prompt) -> tuple[str, dict]:
    with pytest.raises(PromptRejected) as rejected:
        client.queue(prompt)
    assert rejected.value.status == 400 and rejected.value.node_errors, rejected.value.body
    return rejected.value.describe(), rejected.value.node_errors


def failure(client, prompt) -> PromptFailed:
    """Run a prompt that must fail in a node. Sent as plain JSON text, which may hold NaN: Python's json
    writes it and the server reads it, though `requests` refuses to."""
    body = json.dumps({"prompt": prompt, "client_id": client.client_id})
    answer = client.session.post(client.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    with pytest.raises(PromptFailed) as failed:
        client.wait(answer.json()["prompt_id"], timeout=600)
    return failed.value


RAW = ("KeyError", "JSONDecodeError", "math domain error", "Traceback", "weights_only=False")

# (case, prompt, what the message must say): refused at validation, before anything runs
REJECTED = [
    ("a name climbing out of models/LLM", lambda w: with_inputs("8", model_name="../../outside/evil-vlm"),
     "climbs out"),
    ("an absolute folder path", lambda w: with_inputs("8", model_name=str(w / "outside" / "evil-vlm")),
     "absolute path"),
    ("a folder that is not there", lambda w: with_inputs("8", model_name="Qwen3-VL-4B-Instruct"),
     "is not in"),
    ("a teacher name that is not text", lambda w: with_inputs("8", model_name=123), "No VLM folder chosen"),
    ("a dtype outside the list", lambda w: with_inputs("8", dtype="int8"), "auto, bf16, fp16, fp32"),
    ("a negative pixel budget", lambda w: with_inputs("8", max_video_pixels=-5), "max_video_pixels"),
    ("a pixel budget too small to see", lambda w: with_inputs("8", max_video_pixels=100), "at least 2048"),
    ("a truncated config.json", lambda w: with_inputs("8", model_name="truncated-config"), "not valid JSON"),
    ("a checkpoint of another family", lambda w: with_inputs("8", model_name="a-llama"), "'llama' checkpoint"),
    ("pickle-only weights", lambda w: with_inputs("8", model_name="pickle-only"), "pytorch_model.bin"),
    ("a folder without its tokenizer", lambda w: with_inputs("8", model_name="no-tokenizer"), "no tokenizer"),
    ("a folder without a chat template", lambda w: with_inputs("8", model_name="no-template"), "no chat template"),
    ("a conditioning file outside its folder", lambda w: with_inputs("5", file="../LLM/a-llama/config.json"),
     "climbs out"),
    ("a pickled conditioning file", lambda w: with_inputs("5", file="pickled.pt"), "is not in"),
    ("a LoRA target preset outside the list", lambda w: with_inputs("11", targets="everything"),
     "attention+ffn, attention, self-attention"),
    ("a LoRA rank of zero", lambda w: with_inputs("11", rank=0), "rank"),
    ("an unknown scheduler", lambda w: with_inputs("12", scheduler="bogus"), "simple"),
    ("an unknown sampler", lambda w: with_inputs("12", sampler_name="bogus"), "euler"),
    ("an unknown gradient mode", lambda w: with_inputs("12", gradient_mode="middle"), "first, last, all"),
    ("lambda above one", lambda w: with_inputs("12", goal_weight=2.0), "goal_weight"),
    ("no frames for the teacher", lambda w: with_inputs("12", frames=0), "frames"),
    ("a negative loss threshold", lambda w: with_inputs("12", loss_threshold=-1.0), "loss_threshold"),
    ("a query kind outside the list", lambda w: with_inputs("10", kind="rule"), "goal, process"),
    ("an expected answer outside Yes/No", lambda w: with_inputs("10", expected_answer="Maybe"), "Yes, No"),
    ("an empty question", lambda w: with_inputs("10", question="  "), "question is empty"),
    ("an empty instruction", lambda w: with_inputs("9", instruction=""), "instruction is empty"),
    ("a zero frame rate for scoring", lambda w: score_only(fps=0.0), "fps"),
    ("lambda below zero for scoring", lambda w: score_only(goal_weight=-0.5), "goal_weight"),
    ("Best-of-N with no samples", lambda w: compare_outputs(("23",), "20", n=0), "n"),
    ("Best-of-N with an unknown scheduler", lambda w: compare_outputs(("23",), "20", scheduler="karras2"),
     "sgm_uniform"),
    ("a prompt rewrite without an instruction", lambda w: compare_outputs(("24",), "24", instruction=" "),
     "instruction is empty"),
    ("an unknown memory preset", lambda w: with_inputs("12", memory="8gb"), "default, 24gb"),
]


@pytest.mark.parametrize("case, make, expected", REJECTED, ids=[c[0] for c in REJECTED])
def test_bad_values_are_refused_before_anything_runs(client, world, case, make, expected):
    message, node_errors = rejection(client, make(world))
    assert expected in message, message
    assert not any(raw in message for raw in RAW), message


# (case, prompt, message): only known once the graph runs; the node raises the pack's own message
FAILED = [
    ("a conditioning file without the expected tensor", lambda: with_inputs("5", file="wrong_key.safetensors"),
     "expected a tensor named 'conditioning'"),
    ("a damaged safetensors file", lambda: with_inputs("5", file="garbage.safetensors"),
     "cannot be read as safetensors"),
    ("conditioning of the wrong shape", lambda: with_inputs("5", file="wrong_shape.safetensors"),
     "[1, tokens, dim]"),
    ("a learning rate that is not a number", lambda: with_inputs("12", learning_rate=math.nan),
     "learning_rate must be a finite number"),
    ("the full Wan VAE where the TAEHV encoder is needed", lambda: taehv_latent("2"), "48-channel TAEHV"),
]


@pytest.mark.parametrize("case, make, expected", FAILED, ids=[c[0] for c in FAILED])
def test_bad_values_known_only_at_run_time_fail_with_the_packs_message(client, case, make, expected):
    error = failure(client, make())
    assert error.exception_type.endswith("ValueError") and expected in error.exception_message, error
    assert not any(raw in error.exception_message for raw in RAW)


def test_a_linked_bad_value_is_caught_when_it_arrives(client):
    """The host range-checks only constants; a value from another node is checked by the node itself."""
    prompt = demo()
    prompt["40"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 2.0}}
    prompt["12"]["inputs"]["goal_weight"] = ["40", 0]
    error = failure(client, prompt)
    assert "goal_weight must lie between 0.0 and 1.0, got 2.0" in error.exception_message


def test_a_link_placed_inside_the_folder_is_followed(client):
    """Users link large checkpoints into models/LLM; the tiny teacher here is such a link."""
    prompt = copy.deepcopy(demo())
    _, history = client.run(prompt, timeout=600)
    report = json.loads(history["outputs"]["12"]["text"][0])
    assert report["iterations"] == 1 and client.system_stats()


def test_the_teacher_list_offers_only_what_is_inside_the_folder(client):
    listed = client.object_info("VLMTeacherLoader")["VLMTeacherLoader"]["input"]["required"]["model_name"]
    options = listed[1]["options"] if listed[0] == "COMBO" else listed[0]
    assert GOOD_TEACHER in options and "pickle-only" in options
    assert not any("evil" in name or ".." in name for name in options)
    files = client.object_info("LoadConditioningFile")["LoadConditioningFile"]["input"]["required"]["file"]
    file_options = files[1]["options"] if files[0] == "COMBO" else files[0]
    assert "tiny_prompt.safetensors" in file_options and "pickled.pt" not in file_options


def test_the_taehv_latent_node_runs_with_a_taehv_after_refusing_the_full_vae(client):
    error = failure(client, taehv_latent("2"))
    assert "Wan22ImageToVideoLatent" in error.exception_message
    _, history = client.run(taehv_latent("3"), timeout=600)
    assert history["status"]["status_str"] == "success"
