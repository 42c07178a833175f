"""The pack's model folders, and names that stay inside them.

`models/LLM` holds teacher checkpoint folders; `models/conditioning` holds saved text conditioning
(safetensors only). A name sent to a node must be one the node lists: never absolute, never with '..',
and it resolves inside one of the folder's registered paths. Links placed inside a folder are followed,
since users link large checkpoints in that way; a name cannot climb out of the folder.
"""

from __future__ import annotations

import os
import re

import folder_paths

LLM_FOLDER = "LLM"
CONDITIONING_FOLDER = "conditioning"
SAFETENSORS = {".safetensors"}


def register_folders() -> None:
    """Add the default folders after any paths named in extra_model_paths.yaml; conditioning lists
    safetensors files only."""
    for name in (LLM_FOLDER, CONDITIONING_FOLDER):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
    paths, _ = folder_paths.folder_names_and_paths[CONDITIONING_FOLDER]
    folder_paths.folder_names_and_paths[CONDITIONING_FOLDER] = (paths, SAFETENSORS)


def _bases(folder: str) -> list[str]:
    return folder_paths.get_folder_paths(folder) if folder in folder_paths.folder_names_and_paths else []


def vlm_folders() -> list[str]:
    """Checkpoint folders (holding config.json) under every models/LLM path, one or two levels deep."""
    found = set()
    for base in _bases(LLM_FOLDER):
        if not os.path.isdir(base):
            continue
        for entry in sorted(os.listdir(base)):
            path = os.path.join(base, entry)
            if os.path.isfile(os.path.join(path, "config.json")):
                found.add(entry)
            elif os.path.isdir(path):
                found.update(f"{entry}/{sub}" for sub in os.listdir(path)
                             if os.path.isfile(os.path.join(path, sub, "config.json")))
    return sorted(found)


def conditioning_files() -> list[str]:
    return folder_paths.get_filename_list(CONDITIONING_FOLDER) if CONDITIONING_FOLDER in \
        folder_paths.folder_names_and_paths else []


def name_problem(name, folder: str, listed: list[str], what: str) -> str | None:
    """Why `name` cannot be used as a `what` from `folder`, or None."""
    where = " or ".join(_bases(folder)) or f"models/{folder}"
    if not isinstance(name, str) or not name.strip():
        return f"No {what} chosen: pick one of the names listed from {where}."
    parts = re.split(r"[\\/]+", name)
    if os.path.isabs(name) or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return f"{what} {name!r} is an absolute path; give a name listed from {where}."
    if ".." in parts:
        return f"{what} {name!r} climbs out of its folder ('..'); give a name listed from {where}."
    if name not in listed:
        shown = ", ".join(listed[:20]) + (" ..." if len(listed) > 20 else "") if listed else "none yet"
        return f"{what} {name!r} is not in {where} (found: {shown}). Put it there, then refresh the node list."
    return None


def resolve(name: str, folder: str, listed: list[str], what: str) -> str:
    """The path of a listed name inside `folder`, checked as `name_problem` checks it."""
    problem = name_problem(name, folder, listed, what)
    if problem:
        raise ValueError(problem)
    for base in _bases(folder):
        path = os.path.normpath(os.path.join(base, name))
        if os.path.commonpath([path, os.path.normpath(base)]) == os.path.normpath(base) and os.path.exists(path):
            return path
    raise ValueError(f"{what} {name!r} was listed but is gone from {' or '.join(_bases(folder))}; refresh the node list.")
