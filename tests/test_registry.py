"""The pack as the ComfyUI registry sees it: pyproject.toml, LICENSE, and comfy-cli's `comfy node validate`."""

from __future__ import annotations

import re
import subprocess

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tto_runner import REPO_ROOT, default_host_dir
from tto_runner.tools import COMFY_CLI, comfy_cli

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11 or later")
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def host_version() -> Version:
    text = (default_host_dir() / "comfyui_version.py").read_text(encoding="utf-8")
    return Version(re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text).group(1))


def test_requires_comfyui_starts_at_the_tested_host():
    declared = PYPROJECT["tool"]["comfy"]["requires-comfyui"]
    spec = SpecifierSet(declared)
    tested = host_version()
    assert tested in spec, f"the tests run on ComfyUI {tested}, outside requires-comfyui {declared!r}"
    lower = [s for s in spec if s.operator == ">="]
    assert [Version(s.version) for s in lower] == [tested], \
        f"requires-comfyui {declared!r} should start at the tested host, >={tested}"


def test_license_file_matches_the_declared_license():
    project = PYPROJECT["project"]
    assert project["license"] == {"file": "LICENSE"}
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "the comfyui-vlm-teacher authors" in text
    assert "License :: OSI Approved :: MIT License" in project["classifiers"]


def test_registry_fields():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy.get("Icon", "unset") != "", "an empty Icon shows a broken image in the registry: drop it"
    prefixes = {c.split(" :: ")[0] for c in project["classifiers"]}
    assert {"Operating System", "Environment", "Programming Language", "License", "Topic"} <= prefixes


def validation_problems(folder) -> list[str]:
    """Run `comfy node validate` in `folder` and list what would stop or warn a registry publish."""
    done = subprocess.run([str(comfy_cli()), "--skip-prompt", "--no-json", "node", "validate"], cwd=folder,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    problems = [line.strip() for line in output.splitlines()
                if re.match(r"\s*(warning|error)\b", line, re.IGNORECASE) or "Security warnings found" in line]
    if done.returncode != 0:
        problems.append(f"exit code {done.returncode}")
    if "All validation checks passed" not in output:
        problems.append("no 'All validation checks passed' line")
    return problems + ([f"output:\n{output}"] if problems else [])


def test_comfy_node_validate_passes():
    assert validation_problems(REPO_ROOT) == [], f"comfy-cli {COMFY_CLI}"


def test_comfy_node_validate_check_catches_problems(tmp_path):
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "risky.py").write_text("value = eval(input())\n")  # S307: the registry will refuse eval
    assert any("Security warnings found" in p for p in validation_problems(tmp_path))

    (tmp_path / "risky.py").unlink()
    (tmp_path / "pyproject.toml").write_text(re.sub(r'(?m)^requires-comfyui = .*$', 'requires-comfyui = "0.3"',
                                                    pyproject))
    assert any(p.lower().startswith("warning") and "requires-comfyui" in p for p in validation_problems(tmp_path))

    (tmp_path / "pyproject.toml").write_text(re.sub(r'(?m)^version = .*$', 'version = ""', pyproject))
    assert "exit code 1" in validation_problems(tmp_path)
