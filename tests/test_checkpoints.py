"""Teacher checkpoint folders: what is refused before anything is read, and that loading never goes online."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from tto_engine import VLMTeacher
from tto_engine.checkpoints import CheckpointError, check_vlm_folder
from tto_runner import REPO_ROOT

FAMILIES = ("qwen3_vl", "qwen2_5_vl")


@pytest.fixture()
def folder(tiny_teacher_dir, tmp_path):
    """A fresh copy of the tiny teacher to damage."""
    return shutil.copytree(tiny_teacher_dir, tmp_path / "teacher")


def test_a_good_folder_passes(folder):
    assert check_vlm_folder(folder, FAMILIES) == "qwen3_vl"


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "config.json").write_text((f / "config.json").read_text()[:40]), "not valid JSON"),
    (lambda f: (f / "config.json").write_text("[1, 2]"), "not an object"),
    (lambda f: (f / "config.json").write_bytes(b"\xff\xfe\x00garbage"), "not UTF-8"),
    (lambda f: (f / "config.json").write_text(json.dumps({"model_type": "llama"})), "'llama' checkpoint"),
    (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer"),
    (lambda f: (f / "chat_template.jinja").unlink(), "no chat template"),
    (lambda f: (f / "model.safetensors").unlink(), "holds no weights"),
    (lambda f: (f / "config.json").unlink(), "expected a folder holding config.json"),
])
def test_damaged_folders_are_named_with_what_to_fix(folder, damage, message):
    damage(folder)
    with pytest.raises(CheckpointError, match=message) as error:
        VLMTeacher.from_pretrained(folder)
    assert folder.name in str(error.value) or str(folder) in str(error.value)


def test_the_processor_config_is_checked_too(folder):
    (folder / "processor_config.json").write_text('{"video_processor": {"size": ')
    with pytest.raises(CheckpointError, match="processor_config.json is not valid JSON"):
        VLMTeacher.from_pretrained(folder)


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """Python in a fresh process (audit hooks cannot be removed once added), online settings left on."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_pickle_weights_are_refused_before_the_file_is_opened(folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    proc = run_isolated(f"""
        import sys
        opened = []
        sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
        from tto_engine import VLMTeacher
        try:
            VLMTeacher.from_pretrained({str(folder)!r})
        except ValueError as e:
            print("REFUSED", e)
        print("OPENED", any(path.endswith("pytorch_model.bin") for path in opened))
    """)
    assert proc.returncode == 0, proc.stderr
    assert "REFUSED" in proc.stdout and "pytorch_model.bin" in proc.stdout and "safetensors" in proc.stdout
    assert "OPENED False" in proc.stdout
    assert "weights_only=False" not in proc.stdout


def test_loading_a_teacher_makes_no_network_connection(tiny_teacher_dir):
    proc = run_isolated(f"""
        import sys
        network = []
        sys.addaudithook(lambda event, args: network.append(event)
                         if event in ("socket.connect", "socket.getaddrinfo", "urllib.Request") else None)
        import torch
        from tto_engine import Query, VLMTeacher
        teacher = VLMTeacher.from_pretrained({str(tiny_teacher_dir)!r}, dtype=torch.float32)
        scores = teacher.score(torch.rand(2, 3, 64, 64), [Query("Is it red?")])
        print("LOADED", tuple(scores.losses.shape), "NETWORK", network)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED (1,) NETWORK []" in proc.stdout, proc.stdout
