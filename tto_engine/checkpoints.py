"""What a teacher checkpoint folder must hold before anything in it is read as a model.

Weights load only from safetensors: pickle-based formats (.bin, .pt, .pth, .ckpt) can run code when
loaded, so a folder that offers only those is refused with the file named and the conversion to run.
Everything else a folder can get wrong (unparseable config, unsupported model type, no tokenizer, no chat
template) is named too, with the folder, so a user knows what to fix.
"""

from __future__ import annotations

import json
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used as it is; the message says what to fix."""


def convert_hint(path: Path) -> str:
    return (f"Convert it once, in a Python where you trust the file: `import torch, safetensors.torch; "
            f"safetensors.torch.save_file(torch.load('{path.name}', weights_only=True), "
            f"'{path.stem}.safetensors')` (or `save_pretrained(..., safe_serialization=True)` for a "
            f"transformers model), then remove the pickle file.")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not UTF-8 text; replace it with the checkpoint's original file.") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the "
                              f"file is damaged or truncated: copy it again from the original checkpoint.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object; copy it again from the "
                              f"original checkpoint.")
    return data


def check_vlm_folder(folder: Path, supported: tuple[str, ...]) -> str:
    """The folder's model_type, after checking the config, the weights (safetensors only), the tokenizer and
    the chat template. Raises CheckpointError naming the folder and the problem."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"No VLM checkpoint at '{folder}': expected a folder holding config.json, the "
                              f"weights (*.safetensors) and the tokenizer files.")
    model_type = read_json(config_path).get("model_type")
    if model_type not in supported:
        raise CheckpointError(f"'{folder.name}' is a '{model_type}' checkpoint (config.json model_type); the "
                              f"teacher supports {', '.join(supported)} (Qwen3-VL or Qwen2.5-VL).")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(f"'{folder.name}' holds its weights only in pickle format ({pickles[0].name}), "
                                  f"which this pack does not load: pickle files can run code when opened. "
                                  + convert_hint(pickles[0]))
        raise CheckpointError(f"'{folder.name}' holds no weights: put the checkpoint's *.safetensors files next "
                              f"to its config.json.")
    if not any(all((folder / name).is_file() for name in names) for names in TOKENIZER_FILES):
        raise CheckpointError(f"'{folder.name}' has no tokenizer: copy tokenizer.json (or vocab.json and "
                              f"merges.txt) and tokenizer_config.json from the original checkpoint.")
    template_in_config = (folder / "tokenizer_config.json").is_file() and "chat_template" in read_json(
        folder / "tokenizer_config.json")
    if not template_in_config and not any((folder / name).is_file() for name in CHAT_TEMPLATE_FILES):
        raise CheckpointError(f"'{folder.name}' has no chat template: copy chat_template.jinja (or "
                              f"chat_template.json) from the original checkpoint; the teacher's prompts are "
                              f"built with it.")
    return model_type
