"""VLM teacher for ComfyUI: test-time LoRA optimisation that makes video models follow task rules."""

import importlib.util

# Nodes register only inside a ComfyUI host. Outside one (a test runner imports this folder as a
# package) there is nothing to register, and the engine (tto_engine) works on its own.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
