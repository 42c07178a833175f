"""The trained toy-world models (tto_models/toy) as a ComfyUI models folder, for `tto-bench --models toy`; the
layout is `tto_models.toy.models_folder.LAYOUT`.

`ensure_toy_models()` returns the models shipped with the pack (tto_models/toy/models), or where those are
missing, the cached folder (<cache root>/toy-models) once it holds the whole layout and its manifest, and
otherwise trains it with `python -m tto_models.toy train --out DIR` (tens of minutes on a CPU).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from tto_models.toy.models_folder import LAYOUT as TOY_LAYOUT
from tto_models.toy.models_folder import MANIFEST_NAME, SHIPPED

from .paths import REPO_ROOT, cache_root

#: the environment variable the tests read for a trained toy models folder
ENV_VAR = "TTO_TOY_MODELS"
#: the instance shown by workflows/api/vlm_teacher_toy.json: (stream seed, index) of the toy world
EXAMPLE_INSTANCE = (2026, 0)
EXAMPLE_FIRST_FRAME = "toy_first_frame.png"


class ToyModelsError(RuntimeError):
    """The toy models are missing and could not be built."""


def train_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "tto_models.toy", "train", "--out", str(folder)]


def models_cache() -> Path:
    return cache_root() / "toy-models"


def missing_items(folder: Path, manifest: bool = True) -> list[str]:
    """The layout's paths (and the manifest, if asked) that `folder` lacks."""
    folder = Path(folder)
    missing = []
    for rel in TOY_LAYOUT.values():
        path = folder / rel
        if not (path / "config.json" if path.suffix != ".safetensors" else path).is_file():
            missing.append(rel)
    if manifest and not (folder / MANIFEST_NAME).is_file():
        missing.append(MANIFEST_NAME)
    return missing


def check_models_dir(folder: Path) -> Path:
    """A user's --models-dir for the toy set: every model of the layout must be there (no manifest needed)."""
    folder = Path(folder)
    missing = missing_items(folder, manifest=False)
    if missing:
        raise ToyModelsError(f"--models-dir {folder} lacks the toy models {', '.join(missing)}; train them with "
                             f"`python -m tto_models.toy train --out DIR` and pass that DIR, or leave out "
                             f"--models-dir to use (and build once) the cached set in {models_cache()}")
    return folder


def shipped_toy_models() -> Path | None:
    """The trained toy models that come with the pack (tto_models/toy/models), if they are all there."""
    return SHIPPED if not missing_items(SHIPPED) else None


def available_toy_models() -> Path | None:
    """A trained toy models folder if one is at hand without training: $TTO_TOY_MODELS, else the shipped
    models, else the complete cache; None otherwise."""
    env = os.environ.get(ENV_VAR)
    if env:
        folder = Path(env).expanduser()
        return folder if not missing_items(folder, manifest=False) else None
    return shipped_toy_models() or (models_cache() if not missing_items(models_cache()) else None)


def ensure_toy_models(folder: Path | None = None, command: list[str] | None = None,
                      log: Callable[[str], None] = print) -> Path:
    """The toy models folder: `folder` (default <cache root>/toy-models) if it holds the whole layout and the
    manifest, else built by the training command (`command`, default `python -m tto_models.toy train --out
    DIR`) in a sibling `<folder>.partial` that is renamed when complete. The command's output goes to `log`
    line by line."""
    if folder is None and shipped_toy_models() is not None:
        return SHIPPED
    folder = Path(folder or models_cache())
    if not missing_items(folder):
        return folder
    partial = folder.with_name(folder.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    command = command or train_command(partial)
    shown = " ".join(["python", *command[1:]] if command[0] == sys.executable else command)
    log(f"toy models: {folder} is incomplete; training them (tens of minutes on a CPU): {shown}")
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    try:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
    except OSError as e:
        raise ToyModelsError(f"could not run `{' '.join(command)}`: {e}") from e
    tail: list[str] = []
    with proc:
        for line in proc.stdout:
            line = line.rstrip("\n")
            log(f"  {line}")
            tail = (tail + [line])[-5:]
    if proc.returncode != 0:
        raise ToyModelsError(f"building the toy models with `{shown}` failed (exit {proc.returncode}; last lines: "
                             f"{' | '.join(tail) or 'none'}). Run that command yourself, or pass a folder of "
                             f"trained toy models as --models-dir")
    missing = missing_items(partial)
    if missing:
        raise ToyModelsError(f"`{shown}` finished but wrote no {', '.join(missing)} in {partial}")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    log(f"toy models: ready in {folder}")
    return folder


def write_toy_inputs(input_dir: Path) -> Path:
    """The toy workflow's first frame (EXAMPLE_INSTANCE) in a ComfyUI input folder."""
    from PIL import Image

    from tto_models.toy import world

    input_dir = Path(input_dir)
    input_dir.mkdir(parents=True, exist_ok=True)
    path = input_dir / EXAMPLE_FIRST_FRAME
    Image.fromarray(world.first_frame(world.generate_instance(*EXAMPLE_INSTANCE))).save(path)
    return path
