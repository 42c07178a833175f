"""The toy models laid out in a ComfyUI `models/` folder, where the stock loaders and the pack's loaders
find them, with a manifest that says what was built and how.

    diffusion_models/toy_wan22_reasoner.safetensors   UNETLoader
    vae/toy_taew2_2.safetensors                       VAELoader (decodes; the pack's TAEHVImageToVideoLatent encodes)
    LLM/toy-qwen3-vl/                                 VLMTeacherLoader
    conditioning/toy_prompt.safetensors               LoadConditioningFile (the toy reasoner has no text encoder)
    toy_models_manifest.json
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

MANIFEST_NAME = "toy_models_manifest.json"
SHIPPED = Path(__file__).with_name("models")   # the trained set that comes with the pack
LAYOUT = {
    "reasoner": "diffusion_models/toy_wan22_reasoner.safetensors",
    "taehv": "vae/toy_taew2_2.safetensors",
    "teacher": "LLM/toy-qwen3-vl",
    "conditioning": "conditioning/toy_prompt.safetensors",
}


def _save_half(source: Path, target: Path) -> None:
    """A safetensors file with its float tensors in float16 (the reasoner: half the size; UNETLoader computes
    in its own dtype whatever the file holds)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(target), metadata)


def write_models_folder(out, reasoner, taehv, teacher, recipe: dict | None = None) -> Path:
    """Copy a trained reasoner file, TAEHV file and teacher folder into `out` in the layout above, write the
    fixed prompt embedding beside them, and a manifest with every file's sha256 and the `recipe`."""
    from tto_models.wan import write_tiny_conditioning
    from tto_models.weights import content_hashes

    from .reasoner import PROMPT_SEED

    out = Path(out)
    sources = {"reasoner": Path(reasoner), "taehv": Path(taehv), "teacher": Path(teacher)}
    for item, source in sources.items():
        target = out / LAYOUT[item]
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() == target.resolve():
            continue
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
        elif item == "reasoner":
            _save_half(source, target)
        else:
            shutil.copyfile(source, target)
    write_tiny_conditioning(out / LAYOUT["conditioning"], seed=PROMPT_SEED)
    files = {}
    for rel in LAYOUT.values():
        path = out / rel
        for name, digest in content_hashes(path).items():
            files[rel if path.is_file() else f"{rel}/{name}"] = digest
    (out / MANIFEST_NAME).write_text(json.dumps({"files": files, "recipe": recipe or {}}, indent=1) + "\n")
    return out
