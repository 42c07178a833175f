"""The tiny demo's models, written into a ComfyUI `models/` folder with a manifest that lets unchanged
files be kept on the next run."""

from __future__ import annotations

import json
import pathlib
from typing import Callable

import torch

from .qwen import build_tiny_qwen3vl
from .vae import write_tiny_taehv, write_tiny_wan22_vae
from .wan import write_tiny_comfy_wan, write_tiny_conditioning
from .weights import TINY_VERSION, content_hashes

MANIFEST_NAME = "tiny_models_manifest.json"

#: item -> path inside a ComfyUI ``models/`` folder
DEMO_LAYOUT = {
    "diffusion_model": "diffusion_models/tiny_wan22_ti2v.safetensors",
    "vae": "vae/tiny_wan22_vae.safetensors",
    "taehv": "vae/tiny_taew2_2.safetensors",
    "teacher": "LLM/tiny-qwen3-vl",
    "conditioning": "conditioning/tiny_prompt.safetensors",
}


def _builder_tag(item: str) -> str:
    if item == "teacher":
        import tokenizers
        import transformers
        return f"{TINY_VERSION}/transformers-{transformers.__version__}/tokenizers-{tokenizers.__version__}"
    return f"{TINY_VERSION}/torch-{torch.__version__.split('+')[0]}"


def write_demo_models(models_dir, seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Write every ComfyUI-side tiny model into a ComfyUI ``models/`` folder and return their paths.

    Layout (see :data:`DEMO_LAYOUT`)::

        diffusion_models/tiny_wan22_ti2v.safetensors   write_tiny_comfy_wan   (UNETLoader)
        vae/tiny_wan22_vae.safetensors                 write_tiny_wan22_vae   (VAELoader, encodes + decodes)
        vae/tiny_taew2_2.safetensors                   write_tiny_taehv       (VAELoader, decode only)
        LLM/tiny-qwen3-vl/                             build_tiny_qwen3vl     (the teacher folder)
        conditioning/tiny_prompt.safetensors           write_tiny_conditioning: key "conditioning",
                                                       float32 [1, 16, 4096]
        tiny_models_manifest.json                      seed, version and sha256 of every file

    An item whose files still match the manifest for the same seed and builder version is kept as it is;
    anything missing, changed, or built from another seed / version is rewritten. Returns
    ``{item: Path}`` for the five items above plus ``"manifest"``. ``log`` (e.g. ``print``) receives one
    line per item saying whether it was written or kept.
    """
    models_dir = pathlib.Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = models_dir / MANIFEST_NAME
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        old = {}
    old_items = old.get("items", {}) if isinstance(old, dict) else {}
    builders = {
        "diffusion_model": lambda p: write_tiny_comfy_wan(p, seed=seed),
        "vae": lambda p: write_tiny_wan22_vae(p, seed=seed),
        "taehv": lambda p: write_tiny_taehv(p, seed=seed),
        "teacher": lambda p: build_tiny_qwen3vl(p, seed=seed),
        "conditioning": lambda p: write_tiny_conditioning(p, seed=seed),
    }
    items: dict = {}
    paths: dict = {}
    for item, rel in DEMO_LAYOUT.items():
        path = models_dir / rel
        tag = _builder_tag(item)
        entry = old_items.get(item)
        current = content_hashes(path)
        if (isinstance(entry, dict) and entry.get("seed") == seed and entry.get("builder") == tag
                and entry.get("path") == rel and current is not None and entry.get("files") == current):
            status = "kept"
        else:
            builders[item](path)
            current = content_hashes(path)
            status = "wrote"
        items[item] = {"path": rel, "seed": seed, "builder": tag, "files": current}
        paths[item] = path
        if log is not None:
            log(f"{status:5s} {item:15s} {path}")
    manifest = {"version": TINY_VERSION, "seed": seed, "items": items}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if not manifest_path.exists() or manifest_path.read_text() != text:
        manifest_path.write_text(text)
    paths["manifest"] = manifest_path
    return paths



def main(argv=None) -> int:
    """python -m tto_models.demo --models-dir ComfyUI/models [--seed 0]: write (or keep) the demo models."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Write the tiny, seed-deterministic demo models into a ComfyUI "
                                                 "models/ folder (the Wan 2.2 VAE alone is ~1.4 GB).")
    parser.add_argument("--models-dir", required=True, type=pathlib.Path,
                        help="a ComfyUI models/ folder (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of all weights (default 0)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = write_demo_models(args.models_dir, seed=args.seed, log=lambda line: print(line, flush=True))
    print(f"manifest        {paths['manifest']}")
    print(f"done in {time.perf_counter() - start:.1f} s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
