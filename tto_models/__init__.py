"""Deterministic stand-ins for the real checkpoints, built locally (no model hub is reachable here).

- `weights`: seeded filling and a streaming safetensors writer, shared by every builder;
- `tokenizer`, `qwen`: tiny random Qwen3-VL / Qwen2.5-VL teachers with a locally trained tokenizer;
- `wan`, `vae`: a tiny Wan 2.2 TI2V-5B-shaped reasoner (diffusers module or ComfyUI file), the Wan 2.2 VAE
  and the 48-channel TAEHV in ComfyUI's formats, and a conditioning stand-in;
- `demo`: all of the above in a ComfyUI `models/` layout, as the tiny demo and the tests use them;
- `toy`: the ball-to-target toy world (seeded generator and programmatic checker).

Nothing here is part of the method: the engine (`tto_engine`) never imports this package.
"""
