"""Tiny random Qwen3-VL and Qwen2.5-VL teacher checkpoints, saved as folders `from_pretrained` loads locally."""

from __future__ import annotations

import pathlib
import shutil

import torch

from .tokenizer import CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS, build_tiny_tokenizer
from .weights import fill_module_

_HF_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
             "tokenizer_config.json", "processor_config.json", "chat_template.jinja")


def _fresh_dir(out_dir) -> pathlib.Path:
    """An empty folder at ``out_dir``; an existing one is replaced only if it holds a checkpoint's files."""
    out = pathlib.Path(out_dir)
    if out.is_dir() and any(out.iterdir()):
        if not any((out / name).is_file() for name in _HF_FILES):
            raise ValueError(f"refusing to replace {out}: it is not empty and holds no checkpoint files")
        shutil.rmtree(out)
    elif out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _special_ids(tok) -> dict:
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tok.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))))
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def _save_hf_model(model_cls, config, out: pathlib.Path, seed: int, ids: dict) -> None:
    with torch.random.fork_rng(devices=[]):  # HF's own random init must not disturb the caller's RNG
        torch.manual_seed(0)
        model = model_cls(config)
    fill_module_(model, seed)
    model.eval()
    gen = model.generation_config
    gen.bos_token_id = ids["bos_token_id"]
    gen.eos_token_id = [ids["eos_token_id"], ids["pad_token_id"]]
    gen.pad_token_id = ids["pad_token_id"]
    gen.do_sample = False
    model.save_pretrained(out)


def _tiny_text_config(tok, ids: dict, **family) -> dict:
    """The language-model part shared by both tiny teachers; `family` adds or overrides fields."""
    return {**dict(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, hidden_act="silu", max_position_embeddings=32768,
                   rms_norm_eps=1e-6, bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"],
                   pad_token_id=ids["pad_token_id"], tie_word_embeddings=False), **family}


def _tiny_vision_config(**family) -> dict:
    """The vision tower shared by both tiny teachers; `family` adds the fields that differ or overrides them."""
    return {**dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, in_channels=3, spatial_merge_size=2,
                   temporal_patch_size=2, out_hidden_size=128), **family}


def _build_teacher(out_dir, seed: int, config_class, model_class, text: dict, vision: dict, processor) -> pathlib.Path:
    """Build a tiny teacher of one family into `out_dir`: the shared tokenizer, the shared text and vision
    sizes plus the family's own fields, seeded weights, and `processor(tokenizer)` saved beside them."""
    out = _fresh_dir(out_dir)
    tok = build_tiny_tokenizer()
    ids = _special_ids(tok)
    config = config_class(text_config=_tiny_text_config(tok, ids, **text), vision_config=_tiny_vision_config(**vision),
                          image_token_id=ids["image_token_id"], video_token_id=ids["video_token_id"],
                          vision_start_token_id=ids["vision_start_token_id"],
                          vision_end_token_id=ids["vision_end_token_id"], tie_word_embeddings=False)
    _save_hf_model(model_class, config, out, seed, ids)
    processor(tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_qwen3vl(out_dir, seed: int = 0, patch_size: int = 16, image_mean: float = 0.5,
                       video_max_pixels: int = 32 * 32 * 64, vision_depth: int = 2, vision_width: int | None = None,
                       text_layers: int | None = None) -> pathlib.Path:
    """Write a tiny random Qwen3-VL checkpoint folder and return its path.

    Loadable with ``Qwen3VLForConditionalGeneration.from_pretrained(out_dir, local_files_only=True)`` and
    ``AutoProcessor.from_pretrained(out_dir, local_files_only=True)`` (a ``Qwen3VLProcessor``).
    Text: hidden 128, 2 layers, 4 heads (2 kv heads, head_dim 32), intermediate 256, interleaved M-RoPE
    with mrope_section [6, 5, 5]. Vision: depth 2, hidden 64, 2 heads, intermediate 128, patch 16,
    temporal patch 2, spatial merge 2, out_hidden_size 128, deepstack_visual_indexes [0].
    Processors as the real checkpoint's (mean = std = 0.5, fps 2, frame sampling on) but with small
    pixel budgets: video size shortest_edge 32*32*2 / longest_edge 32*32*64 (t*h*w pixels),
    image shortest_edge 32*32*4 / longest_edge 32*32*256. The folder is replaced if it exists.
    The keyword arguments change the patch size, the pixel mean (std stays 0.5), the video pixel budget, the
    vision depth and width (heads of 32, MLP twice as wide) and the text layers, where given (the toy world's
    teacher reads small shapes on white: patch 8, mean 1).
    """
    if vision_width is not None and (vision_width <= 0 or vision_width % 32):
        raise ValueError(f"vision_width must be a positive multiple of 32 (heads of 32), got {vision_width}")
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    half = [0.5, 0.5, 0.5]
    mean = [image_mean] * 3

    def processor(tok):
        image_processor = Qwen2VLImageProcessor(
            patch_size=patch_size, temporal_patch_size=2, merge_size=2, image_mean=mean, image_std=half,
            size={"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 256})
        video_processor = Qwen3VLVideoProcessor(
            patch_size=patch_size, temporal_patch_size=2, merge_size=2, image_mean=mean, image_std=half,
            size={"shortest_edge": 32 * 32 * 2, "longest_edge": video_max_pixels},
            fps=2, min_frames=4, max_frames=768, do_sample_frames=True, cap_pixels_per_frame=False)
        return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                chat_template=CHAT_TEMPLATE)

    return _build_teacher(
        out_dir, seed, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
        text=dict(head_dim=32, attention_bias=False, **({} if text_layers is None else {"num_hidden_layers": text_layers}),
                  rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [6, 5, 5],
                                   "mrope_interleaved": True}),
        vision=dict(hidden_act="gelu_pytorch_tanh", patch_size=patch_size, num_position_embeddings=2304,
                    deepstack_visual_indexes=[0], depth=vision_depth,
                    **({} if vision_width is None else dict(hidden_size=vision_width, intermediate_size=2 * vision_width,
                                                            num_heads=vision_width // 32))),
        processor=processor)


def build_tiny_qwen25vl(out_dir, seed: int = 0) -> pathlib.Path:
    """Write a tiny random Qwen2.5-VL checkpoint folder and return its path.

    Same tokenizer and text sizes as :func:`build_tiny_qwen3vl` (M-RoPE section [4, 6, 6]). Vision: depth 2,
    hidden 64, 2 heads, intermediate 128, patch 14, temporal patch 2, merge 2, window_size 56 (2x2 merged
    tokens per window), fullatt_block_indexes [1], out_hidden_size 128. Processors use the Qwen2-VL
    defaults (CLIP mean/std) with small pixel budgets (per frame: 28*28*4 .. 28*28*64).
    """
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    def processor(tok):
        image_processor = Qwen2VLImageProcessor(
            patch_size=14, temporal_patch_size=2, merge_size=2,
            size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 256})
        video_processor = Qwen2VLVideoProcessor(
            patch_size=14, temporal_patch_size=2, merge_size=2,
            size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 64}, cap_pixels_per_frame=False)
        return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                   chat_template=CHAT_TEMPLATE)

    return _build_teacher(
        out_dir, seed, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
        text=dict(use_sliding_window=False, max_window_layers=2,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}),
        vision=dict(hidden_act="silu", patch_size=14, tokens_per_second=2, window_size=56, fullatt_block_indexes=[1]),
        processor=processor)
