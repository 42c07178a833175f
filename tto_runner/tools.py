"""Pinned outside tools that the checks use, installed on first use under <cache root>/tools/.

- The newest ComfyUI frontend, to load the pack's workflows in what users run today. A ComfyUI server
  takes it with `--front-end-root <frontend_root()>`.
- comfy-cli, whose `comfy node validate` is the ComfyUI registry's own check of a pack before publishing.
  It gets a small virtual environment of its own: it is a tool, not a dependency of the pack.

Both come from the package index through pip. Other workers may share the cache, so each install runs
under a lock and is marked complete only at the end; a half-finished folder is rebuilt.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

from .paths import cache_root

# The newest comfyui-frontend-package on the index when it was last checked. To bump it: look up the
# newest version (`pip index versions comfyui-frontend-package`), set it here, and run
# `bash scripts/test.sh tests/test_pack_host.py -k frontend`; every shipped UI workflow must still load.
NEWEST_FRONTEND = "1.58.1"
# comfy-cli, for `comfy node validate` (tests/test_registry.py).
COMFY_CLI = "1.23.0"

_COMPLETE = ".complete"


class ToolInstallError(RuntimeError):
    """pip could not fetch or install a pinned tool."""


def tools_dir() -> Path:
    return cache_root() / "tools"


@contextmanager
def _locked(name: str):
    tools_dir().mkdir(parents=True, exist_ok=True)
    with open(tools_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pip(python: str, *args: str, what: str) -> None:
    done = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise ToolInstallError(f"pip could not {what} (exit code {done.returncode}). It needs the package index; "
                               f"check the network or pip's index settings, then run again.\n{tail}")


def frontend_root(version: str = NEWEST_FRONTEND) -> Path:
    """The `static` folder of comfyui-frontend-package==`version` (the wheel is downloaded and unpacked once)."""
    name = f"comfyui-frontend-package-{version}"
    folder = tools_dir() / name
    static = folder / "comfyui_frontend_package" / "static"
    with _locked(name):
        if not (folder / _COMPLETE).exists():
            shutil.rmtree(folder, ignore_errors=True)
            download = folder / "download"
            _pip(sys.executable, "download", "--no-deps", "--only-binary", ":all:", "--dest", str(download),
                 f"comfyui-frontend-package=={version}", what=f"download comfyui-frontend-package {version}")
            (wheel,) = download.glob("*.whl")
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(folder)
            shutil.rmtree(download)
            if not (static / "index.html").is_file():
                raise ToolInstallError(f"comfyui-frontend-package {version} has no static/index.html in {folder}")
            (folder / _COMPLETE).touch()
    return static


def comfy_cli(version: str = COMFY_CLI) -> Path:
    """The `comfy` command of comfy-cli==`version`, in its own virtual environment (built once)."""
    name = f"comfy-cli-{version}"
    venv = tools_dir() / name
    command = venv / "bin" / "comfy"
    with _locked(name):
        if not (venv / _COMPLETE).exists():
            shutil.rmtree(venv, ignore_errors=True)
            made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
            if made.returncode != 0:
                raise ToolInstallError(f"could not create a virtual environment in {venv}:\n{made.stderr}")
            _pip(str(venv / "bin" / "python"), "install", "--quiet", f"comfy-cli=={version}",
                 what=f"install comfy-cli {version} into {venv}")
            if not command.is_file():
                raise ToolInstallError(f"comfy-cli {version} installed no `comfy` command in {venv / 'bin'}")
            (venv / _COMPLETE).touch()
    return command
