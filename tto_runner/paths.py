"""Where things live: this checkout, and the cache that holds the environment, the host and the tiny models.

$TTO_HOME moves the cache (default ~/.cache/comfy-vlm-teacher; scripts/setup_env.sh reads the same variable);
$TTO_COMFYUI names the ComfyUI host folder (see local_server.default_host_dir).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """$TTO_HOME, or ~/.cache/comfy-vlm-teacher."""
    env = os.environ.get("TTO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "comfy-vlm-teacher"


def import_as_pack(name: str):
    """This checkout imported as the ComfyUI custom-node package it is (its modules import relatively),
    under `name`; imported once per process. The host must already be importable."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                      submodule_search_locations=[str(REPO_ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
