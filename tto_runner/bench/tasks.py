"""Task folders: discovery and validation.

A task is a folder holding `first_frame.png` and `prompt.txt` (VBVR-Bench layout: `<split>/<task>/00000/`);
its id is its path relative to --tasks, with "/" separators.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

FIRST_FRAME = "first_frame.png"
PROMPT_FILE = "prompt.txt"
MIN_SIDE = 32          # smaller first frames are reported as invalid
MAX_ASPECT = 4.0       # and so are frames more elongated than this


class BenchError(RuntimeError):
    """A problem with the command line, the template or the servers: nothing can run."""


@dataclass
class Task:
    id: str                      # path relative to --tasks, with "/" separators
    dir: Path
    prompt: str | None = None
    size: tuple[int, int] | None = None   # first frame (width, height)
    error: str | None = None     # set: the folder is invalid, with the reason
    # Scheduling state, kept with the task while it moves between servers.
    attempts: int = 0
    task_failures: int = 0
    avoid: set = field(default_factory=set)   # servers to prefer not to use (the task failed there)
    attempt_log: list = field(default_factory=list)

    @property
    def first_frame(self) -> Path:
        return self.dir / FIRST_FRAME


def discover_tasks(root: str | os.PathLike) -> list[Task]:
    """Every folder under `root` (recursively, `root` included) that holds first_frame.png or prompt.txt.
    A folder with both, a non-empty prompt and a readable image of sensible size is a task; any other is
    returned with `error` set (invalid). Sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"--tasks {root}: not a folder")
    tasks = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = set(filenames)
        if FIRST_FRAME not in names and PROMPT_FILE not in names:
            continue
        folder = Path(dirpath)
        rel = folder.relative_to(root).as_posix()
        task = Task(id=root.resolve().name if rel == "." else rel, dir=folder)
        task.error = _check_task(task, names)
        tasks.append(task)
    return sorted(tasks, key=lambda t: t.id)


def _check_task(task: Task, names: set) -> str | None:
    """The reason the folder is not a valid task, or None; fills `prompt` and `size` on the way."""
    if PROMPT_FILE not in names:
        return f"{FIRST_FRAME} without {PROMPT_FILE}"
    if FIRST_FRAME not in names:
        return f"{PROMPT_FILE} without {FIRST_FRAME}"
    try:
        text = (task.dir / PROMPT_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return f"{PROMPT_FILE} cannot be read as UTF-8 text: {e}"
    if not text.strip():
        return f"{PROMPT_FILE} is empty"
    task.prompt = text.strip()
    from PIL import Image

    try:
        with Image.open(task.first_frame) as img:
            img.load()
            task.size = img.size
    except Exception as e:  # PIL raises many kinds for broken files
        return f"{FIRST_FRAME} cannot be read as an image: {type(e).__name__}: {e}"
    w, h = task.size
    if min(w, h) < MIN_SIDE:
        return f"{FIRST_FRAME} is {w}x{h}; both sides must be at least {MIN_SIDE} px"
    if max(w, h) / min(w, h) > MAX_ASPECT:
        return f"{FIRST_FRAME} is {w}x{h}; an aspect ratio above {MAX_ASPECT:g}:1 is not a video frame"
    return None


def task_slug(task_id: str) -> str:
    """A short, file-name-safe, unique name for a task id."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", task_id).strip("._")[-60:]
    return f"{safe}_{hashlib.sha1(task_id.encode()).hexdigest()[:8]}"
