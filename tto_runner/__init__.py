"""Headless tools around a real ComfyUI server: start one with this pack installed, drive it over HTTP and
websocket, and check workflows in the real frontend (headless Chromium).

Nothing here imports ComfyUI or torch: a server is a subprocess and everything else talks to it over the
network, so the same client drives a local test server or any number of remote ones.
"""

from .client import (ComfyClient, ComfyError, PromptFailed, PromptInterrupted, PromptRejected, ServerConnectionError,
                     server_answers)
from .local_server import PACK_NAME, LocalComfy, ServerStartError, default_host_dir
from .paths import REPO_ROOT, cache_root

__all__ = [
    "PACK_NAME",
    "REPO_ROOT",
    "ComfyClient",
    "ComfyError",
    "LocalComfy",
    "PromptFailed",
    "PromptInterrupted",
    "PromptRejected",
    "ServerConnectionError",
    "ServerStartError",
    "cache_root",
    "default_host_dir",
    "server_answers",
]
