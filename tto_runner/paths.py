"""Where things live: this checkout, and the cache that holds the environment, the host and the tiny models.

$TTO_HOME moves the cache (default ~/.cache/comfy-vlm-teacher; scripts/setup_env.sh reads the same variable);
$TTO_COMFYUI names the ComfyUI host folder (see local_server.default_host_dir).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """$TTO_HOME, or ~/.cache/comfy-vlm-teacher."""
    env = os.environ.get("TTO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "comfy-vlm-teacher"
