"""VLM teacher for ComfyUI: test-time LoRA optimisation that makes video models follow task rules."""

from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
