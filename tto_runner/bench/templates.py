"""Workflow templates and method settings: loading, filling one per task, the video size policy, refusing
settings no node takes, and the configuration hash that decides what counts as the same experiment.

A template is an API-format workflow ({id: {class_type, inputs, _meta}}). Two node titles (`_meta.title`,
set in ComfyUI's node properties) mean something here: `result` picks the SaveVideo whose video is the task's
result when there are several, and `instruction` marks the node that receives the task's prompt.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..paths import REPO_ROOT
from ..workflow_format import is_link
from .tasks import BenchError, Task

METHODS = ("baseline", "best_of_n", "solver", "tto")
MODEL_SETS = ("tiny", "wan22", "toy")
TEMPLATE_DIR = REPO_ROOT / "workflows" / "api" / "bench"
SEED_INPUTS = ("seed", "noise_seed")
# Image-to-video latent nodes: the stock one (full Wan 2.2 VAE) and the pack's TAEHV one (the toy set has no
# full VAE). Both take width, height and length.
LATENT_NODES = ("Wan22ImageToVideoLatent", "TAEHVImageToVideoLatent")
RESULT_TITLE = "result"
INSTRUCTION_TITLE = "instruction"
# Nodes that can hold the task's prompt, and the input it goes to.
TEXT_SLOTS = {"PrimitiveStringMultiline": "value", "PrimitiveString": "value", "CLIPTextEncode": "text"}
TEACHER_INSTRUCTION_NODES = ("TeacherAnalyze", "TeacherRewritePrompt")

# Method settings: setting name (the flag is --setting-name) -> [(node class, input name)] it sets. A setting
# carries the name of the node input it sets, so one thing has one name from the command line to the node.
SETTING_TARGETS: dict[str, list[tuple[str, str]]] = {
    "n": [("BestOfNSample", "n")],
    "max_iterations": [("TTOLoop", "max_iterations")],
    "learning_rate": [("TTOLoop", "learning_rate")],
    "loss_threshold": [("TTOLoop", "loss_threshold")],
    "frames": [("TTOLoop", "frames"), ("BestOfNSample", "frames")],
    "steps": [("KSampler", "steps"), ("TTOLoop", "steps"), ("BestOfNSample", "steps")],
    "cfg": [("KSampler", "cfg"), ("TTOLoop", "cfg"), ("BestOfNSample", "cfg")],
    "length": [(cls, "length") for cls in LATENT_NODES],
}


def template_path(method: str, models: str) -> Path:
    return TEMPLATE_DIR / f"{method}_{models}.json"


def load_template(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        prompt = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"workflow template {path} not found") from None
    except ValueError as e:
        raise BenchError(f"workflow template {path} is not JSON: {e}") from None
    if not isinstance(prompt, dict) or not all(isinstance(v, dict) and "class_type" in v for v in prompt.values()):
        raise BenchError(f"{path} is not an API-format workflow ({{id: {{class_type, inputs}}}}); export it with "
                         f"'Export (API)' in ComfyUI")
    output_node(prompt, path)
    instruction_slots(prompt, path)
    return prompt


def _title(node: dict) -> str:
    return str(node.get("_meta", {}).get("title", "")).strip().lower()


def _describe_nodes(prompt: dict, ids) -> str:
    return ", ".join(f"node {k} ({prompt[k]['class_type']})" for k in ids)


def output_node(prompt: dict, where: Any = "the template") -> str:
    """The SaveVideo node whose video is the task's result: the only one, or the one titled 'result'."""
    saves = [k for k, v in prompt.items() if v["class_type"] == "SaveVideo"]
    if len(saves) > 1:
        saves = [k for k in saves if _title(prompt[k]) == RESULT_TITLE]
    if len(saves) != 1:
        raise BenchError(f"{where} needs exactly one SaveVideo node (or one with _meta title '{RESULT_TITLE}'); "
                         f"it has {sum(v['class_type'] == 'SaveVideo' for v in prompt.values())}")
    return saves[0]


def instruction_slots(prompt: dict, where: Any = "the template") -> list[tuple[str, str]]:
    """(node id, input name) of every place the task's prompt goes.

    The instruction slot is the node titled 'instruction' (a string primitive or a CLIPTextEncode; several
    may be titled so). Without a title it is the one text that reaches a `positive` input: a string
    primitive wired to a CLIPTextEncode whose output is wired to a `positive` input, or such a
    CLIPTextEncode holding its own text; a string primitive wired to a teacher's `instruction` counts as
    well. Other texts (a negative prompt) are left alone; more than one candidate is refused. In both cases
    every TeacherAnalyze / TeacherRewritePrompt whose `instruction` is not wired gets the prompt too."""
    marked = [k for k, v in prompt.items() if _title(v) == INSTRUCTION_TITLE]
    if marked:
        slots = []
        for k in marked:
            cls, inputs = prompt[k]["class_type"], prompt[k].get("inputs", {})
            name = TEXT_SLOTS.get(cls) or ("instruction" if cls in TEACHER_INSTRUCTION_NODES else None)
            if name is None:
                raise BenchError(f"{where}: node {k} ({cls}) is titled '{INSTRUCTION_TITLE}', but only "
                                 f"{', '.join(TEXT_SLOTS)} or {', '.join(TEACHER_INSTRUCTION_NODES)} can take "
                                 f"the task's prompt")
            if is_link(inputs.get(name)):
                raise BenchError(f"{where}: node {k} ({cls}) is titled '{INSTRUCTION_TITLE}', but its {name} is "
                                 f"wired to node {inputs[name][0]}; title that node instead")
            if cls not in TEACHER_INSTRUCTION_NODES:
                slots.append((k, name))
    else:
        candidates = _wired_instruction_candidates(prompt)
        if len(candidates) > 1:
            raise BenchError(f"{where}: several texts could take the task's prompt "
                             f"({_describe_nodes(prompt, candidates)}); give the one for the instruction the "
                             f"title '{INSTRUCTION_TITLE}'")
        slots = [(k, TEXT_SLOTS[prompt[k]["class_type"]]) for k in candidates]
    for k, node in prompt.items():
        if node["class_type"] in TEACHER_INSTRUCTION_NODES and not is_link(node.get("inputs", {}).get("instruction")):
            slots.append((k, "instruction"))
    return slots


def _wired_instruction_candidates(prompt: dict) -> list[str]:
    consumers: dict[str, list[tuple[str, str]]] = {}   # source id -> [(consumer id, input name)]
    for k, node in prompt.items():
        for name, value in node.get("inputs", {}).items():
            if is_link(value):
                consumers.setdefault(value[0], []).append((k, name))

    def feeds_positive(encoder: str) -> bool:
        return any(name == "positive" for _, name in consumers.get(encoder, []))

    candidates = []
    for k, node in prompt.items():
        cls = node["class_type"]
        if cls == "CLIPTextEncode":
            if not is_link(node.get("inputs", {}).get("text")) and feeds_positive(k):
                candidates.append(k)
        elif cls in TEXT_SLOTS:
            uses = consumers.get(k, [])
            if any(prompt[c]["class_type"] == "CLIPTextEncode" and name == "text" and feeds_positive(c)
                   or prompt[c]["class_type"] in TEACHER_INSTRUCTION_NODES and name == "instruction"
                   for c, name in uses):
                candidates.append(k)
    return sorted(candidates, key=lambda k: (len(k), k))


def round32(x: float) -> int:
    return max(32, int(round(x / 32.0)) * 32)


def latent_size(image_size: tuple[int, int], policy: str, template_size: tuple[int, int]) -> tuple[int, int]:
    """Width and height for the image-to-video latent node (LATENT_NODES).

    policy "template": the template's own size. "image": the first frame's size rounded to multiples of 32,
    scaled down (same aspect) when it holds more pixels than the template's size. "WxH": that size, rounded
    to multiples of 32."""
    if policy == "template":
        return template_size
    if policy == "image":
        w, h = image_size
        budget = template_size[0] * template_size[1]
        if w * h > budget:
            scale = (budget / (w * h)) ** 0.5
            w, h = w * scale, h * scale
        rw, rh = round32(w), round32(h)
        while rw * rh > budget and max(rw, rh) > 32:  # rounding up may overshoot the budget
            if rw >= rh:
                rw -= 32
            else:
                rh -= 32
        return rw, rh
    m = re.fullmatch(r"(\d+)[xX](\d+)", policy)
    if not m:
        raise BenchError(f"--size {policy!r}: use image, template or WIDTHxHEIGHT")
    return round32(int(m.group(1))), round32(int(m.group(2)))


def fill_template(template: dict, task: Task, image_name: str, settings: dict, prefix: str,
                  size_policy: str = "template") -> tuple[dict, set]:
    """The template filled for one task; also returns the names of the settings it applied (plus "prompt"
    when the instruction landed somewhere)."""
    prompt = copy.deepcopy(template)
    applied = set()
    for node_id, name in instruction_slots(prompt):
        prompt[node_id].setdefault("inputs", {})[name] = task.prompt
        applied.add("prompt")
    for node in prompt.values():
        cls, inputs = node["class_type"], node.setdefault("inputs", {})
        if cls == "LoadImage":
            inputs["image"] = image_name
        elif cls in LATENT_NODES and task.size is not None:
            size = latent_size(task.size, size_policy, (inputs.get("width", 832), inputs.get("height", 480)))
            inputs["width"], inputs["height"] = size
        elif cls == "SaveVideo":
            inputs["filename_prefix"] = prefix
        if settings.get("seed") is not None:
            for name in SEED_INPUTS:
                if name in inputs and not is_link(inputs[name]):
                    inputs[name] = settings["seed"]
                    applied.add("seed")
        for setting, targets in SETTING_TARGETS.items():
            value = settings.get(setting)
            if value is None:
                continue
            for target_cls, name in targets:
                if cls == target_cls and not is_link(inputs.get(name)):
                    inputs[name] = value
                    applied.add(setting)
    return prompt, applied


def setting_flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def check_settings(template: dict, settings: dict, where: str) -> bool:
    """Refuse settings that no node of the template takes (e.g. --n for the tto method). Returns whether
    the template has a place for the task's prompt."""
    probe = Task(id="probe", dir=Path("."), prompt="probe", size=(832, 480))
    _, applied = fill_template(template, probe, "probe.png", settings, "probe")
    unused = [k for k, v in settings.items() if v is not None and k not in applied]
    if unused:
        flags = ", ".join(setting_flag(k) for k in unused)
        raise BenchError(f"{flags}: no node in {where} takes {'it' if len(unused) == 1 else 'them'}")
    return "prompt" in applied


def config_hash(template: dict, settings: dict, size_policy: str) -> str:
    """Identifies an experiment: a task done under another hash is run again."""
    blob = json.dumps({"template": template, "settings": settings, "size": size_policy}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
