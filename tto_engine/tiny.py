"""Tiny, deterministic stand-ins for the real checkpoints (no model hub is reachable here).

Everything is built on the CPU from a seed: the same seed gives byte-identical files, a different seed
gives different weights. Every tensor is filled explicitly from its own ``torch.Generator`` (seeded from
the seed and the tensor's name), because ComfyUI's ops skip weight init and an unfilled tensor would hold
garbage. This module never imports ``comfy``: the ComfyUI-side files are plain safetensors state dicts
whose key names and shapes follow the original checkpoint formats that ComfyUI detects.

Public API
----------
Hugging Face side (the teacher):
    build_tiny_qwen3vl(out_dir, seed=0) -> Path      tiny Qwen3-VL folder (model + tokenizer + processor)
    build_tiny_qwen25vl(out_dir, seed=0) -> Path     tiny Qwen2.5-VL folder (same tokenizer)
    build_tiny_tokenizer(...)                        the shared byte-level BPE tokenizer (Qwen2Tokenizer)
Diffusers side (host-independent reasoner for engine unit tests):
    build_tiny_diffusers_wan(seed=0, **overrides) -> diffusers.WanTransformer3DModel
    TINY_DIFFUSERS_TEXT_DIM
ComfyUI side (files for stock loaders):
    write_tiny_comfy_wan(path, seed=0, dim=128, layers=2, ffn_dim=256) -> Path   Wan 2.2 TI2V-5B layout
    write_tiny_wan22_vae(path, seed=0) -> Path       full-width Wan 2.2 VAE, random, float16
    write_tiny_taehv(path, seed=0) -> Path           48-channel TAEHV (taew2_2 / lighttaew2_2 layout)
    tiny_conditioning(seed=0, tokens=16, dim=4096) -> Tensor [1, tokens, dim]
    write_tiny_conditioning(path, seed=0, tokens=16, dim=4096) -> Path
    write_demo_models(models_dir, seed=0) -> dict    all of the above in a ComfyUI ``models/`` layout
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import shutil
import struct
import sys
import zlib
from typing import Callable, Iterable

import torch

__all__ = [
    "TINY_VERSION",
    "TINY_DIFFUSERS_TEXT_DIM",
    "CONDITIONING_KEY",
    "QWEN_SPECIAL_TOKENS",
    "CHAT_TEMPLATE",
    "build_tiny_tokenizer",
    "build_tiny_qwen3vl",
    "build_tiny_qwen25vl",
    "build_tiny_diffusers_wan",
    "comfy_wan_shapes",
    "write_tiny_comfy_wan",
    "wan22_vae_shapes",
    "write_tiny_wan22_vae",
    "taehv_shapes",
    "write_tiny_taehv",
    "tiny_conditioning",
    "write_tiny_conditioning",
    "write_demo_models",
    "MANIFEST_NAME",
    "DEMO_LAYOUT",
]

#: Bumped whenever any builder's output changes; part of the demo manifest.
TINY_VERSION = "tiny-models-1"

#: Text width of the tiny diffusers Wan transformer (its ``text_dim``).
TINY_DIFFUSERS_TEXT_DIM = 64

#: Key of the conditioning tensor in files written by :func:`write_tiny_conditioning`.
CONDITIONING_KEY = "conditioning"

#: Qwen's special tokens, in the order Qwen's own vocabularies hold them.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# A minimal chat template in the Qwen chat format, written for this project. Content may be a string
# or a list of items of type "text", "image" or "video".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}"
    "{{- item['text'] -}}"
    "{%- elif item['type'] == 'image' -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

_TOKENIZER_VOCAB_SIZE = 2000


# ----------------------------------------------------------------------------------------------------
# Deterministic filling
# ----------------------------------------------------------------------------------------------------

def _generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from (seed, tensor name): filling does not depend on iteration order."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + zlib.crc32(name.encode("utf-8"))) % (2**63 - 1)
    g = torch.Generator(device="cpu")
    g.manual_seed(mixed)
    return g


def _normal(shape, std: float, seed: int, name: str) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=_generator(seed, name), dtype=torch.float32).mul_(std)


def _fill_module_(module: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Overwrite every parameter and persistent buffer of ``module`` from the seed.

    Biases are zeros, one-dimensional weights (norm scales) ones, everything else N(0, std).
    """
    with torch.no_grad():
        tensors = dict(module.named_parameters())
        persistent = module.state_dict(keep_vars=True)
        for name, buf in module.named_buffers():
            if name in persistent and buf.is_floating_point():
                tensors[name] = buf
        for name in sorted(tensors):
            t = tensors[name]
            if name.endswith("bias"):
                t.zero_()
            elif t.ndim == 1:
                t.fill_(1.0)
            else:
                t.copy_(_normal(t.shape, std, seed, name).to(t.dtype))


# ----------------------------------------------------------------------------------------------------
# Safetensors, written streamingly (one tensor in memory at a time)
# ----------------------------------------------------------------------------------------------------

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def _write_safetensors(path, specs: Iterable[tuple[str, tuple[int, ...]]], make: Callable[[str, tuple], torch.Tensor],
                       dtype: torch.dtype, metadata: dict | None = None) -> pathlib.Path:
    """Write a safetensors file tensor by tensor. ``make(name, shape)`` returns a float tensor."""
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; this writer assumes a little-endian host")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    specs = sorted((name, tuple(int(s) for s in shape)) for name, shape in specs)
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    offset = 0
    for name, shape in specs:
        nbytes = math.prod(shape) * itemsize
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in specs:
            t = make(name, shape)
            if tuple(t.shape) != shape:
                raise AssertionError(f"{name}: made {tuple(t.shape)}, expected {shape}")
            f.write(t.to(dtype).contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------------
# Tokenizer (shared by both Qwen builders)
# ----------------------------------------------------------------------------------------------------

def _corpus() -> list[str]:
    """A small English corpus, written for this project and generated combinatorially (deterministic).

    Questions about videos, balls and mazes, yes/no answers, JSON with "goal"/"process" keys, digits.
    """
    colors = "red green blue yellow orange purple pink brown black white gray grey cyan magenta gold silver".split()
    things = ("ball cube sphere square circle triangle star arrow robot car agent marker dot token piece block "
              "box wall door key coin gem tile cell grid maze path road line bridge ladder platform rope ring "
              "disk bar stick card pawn knight king queen tower boat plane train bird fish cat dog mouse "
              "person hand cup glass bottle plate chair table lamp window mirror clock flag tree flower rock").split()
    places = ("goal target exit entrance corner center edge border start finish end top bottom left right "
              "middle side floor ceiling room corridor hole gap slot box bin cup zone area region area").split()
    verbs = ("move roll slide travel go push pull carry guide bring jump fall rise turn rotate spin bounce "
             "stop start reach touch hit avoid cross enter leave follow chase pass open close fill pour drop "
             "lift place stack sort swap match connect draw trace paint grow shrink split merge vanish appear "
             "change keep stay remain hold release collide break melt freeze flow slip climb").split()
    adjectives = ("small large big tiny huge tall short long wide narrow thin thick heavy light fast slow "
                  "smooth rough round flat straight curved bright dark empty full open closed solid broken "
                  "clean dirty hot cold wet dry same different first last next previous final whole entire "
                  "correct wrong visible hidden intact stable steady sudden gradual physical plausible "
                  "realistic consistent continuous").split()
    adverbs = ("slowly quickly smoothly carefully directly exactly only always never still again finally "
               "already almost completely partly clearly steadily suddenly gradually").split()
    words = ("video frame frames clip scene camera view image picture motion movement position location "
             "direction distance speed velocity time second seconds step steps order sequence rule rules "
             "task instruction question answer teacher student model score reward loss confidence "
             "probability objective process goal query queries supervision reasoning physics gravity "
             "collision shadow light color shape size number count left right above below behind between "
             "inside outside through across along around toward towards without within during before after "
             "until while because therefore however although").split()
    common = ("about above across action actually add after again against age ago agree ahead air all allow "
              "almost alone along already also always among amount angle animal another any anything appear "
              "apply around arrive ask attempt attention away back balance base basic become begin behavior "
              "believe belong beside best better beyond bottom brief build busy button calm cannot careful "
              "carry case cause certain chance check choice choose circle clear climb close common compare "
              "complete contain continue control corner could cover create current curve decide define "
              "describe detail develop difference difficult discover display during each early easy effect "
              "either else enough equal even event every example except expect explain fact fail feature "
              "field figure find follow force form forward free front general give ground group guess happen "
              "happens help here high however idea important include increase indicate initial instead "
              "interest itself judge just keep kind know known large later least less level likely limit "
              "little look lower main make many maybe mean measure might minute mistake moment more most "
              "much must near nearly need neither never nothing notice object obvious often once other "
              "output over own part particular perhaps plan point possible prefer present pretty probably "
              "problem produce provide purpose quite rather ready real reason record reduce region relative "
              "remember repeat report require result return right role round safe sample scale search "
              "select sense separate set several should show side sign simple since single slightly some "
              "something sometimes soon space special specific stage state such suggest support sure "
              "surface system take than that their them then there these thing think this those though "
              "three throughout together too total track true try twice under unit upon usual value very "
              "visible wait want watch way well were what when where whether which while who whose why will "
              "with within word work would yet zero one two four five six seven eight nine ten hundred").split()
    hazards = ["the X crosses", "the walls", "the black cells", "the obstacles", "the red lines", "the holes",
               "the spikes", "the water", "the fire", "the other balls"]
    lines: list[str] = []
    n_things = len(things)
    for i in range(n_things * 3):
        color = colors[i % len(colors)]
        obj = things[i % n_things]
        other = things[(i * 7 + 3) % n_things]
        ocolor = colors[(i * 5 + 2) % len(colors)]
        place = places[(i * 3) % len(places)]
        verb = verbs[i % len(verbs)]
        verb2 = verbs[(i * 11 + 5) % len(verbs)]
        adj = adjectives[i % len(adjectives)]
        adv = adverbs[i % len(adverbs)]
        word = words[i % len(words)]
        word2 = words[(i * 13 + 7) % len(words)]
        hazard = hazards[i % len(hazards)]
        lines += [
            f"{verb.capitalize()} the {color} {obj} to the {ocolor} {place} without touching {hazard}.",
            f"By the end of the video, does the {color} {obj} reach the {place}?",
            f"Does the {color} {obj} avoid all of {hazard}?",
            f"Does the {color} {obj} stay intact, without splitting or vanishing?",
            f"Does the {adj} {obj} {verb2} {adv} in the {word}?",
            f"Is the {color} {obj} at the {place} in the last frame of the video?",
            f"The {adj} {color} {obj} {verb}s {adv} toward the {ocolor} {other}, and the {word2} is {adj}.",
            f"In the first frame the {obj} is near the {place}; later it {verb2}s {adv}.",
            f"Answer with Yes or No. Does the {obj} touch {hazard}? No",
            f"Answer with Yes or No. Does the {obj} reach the {place}? Yes",
            f"Question: does the video show the {color} {obj} {verb}ing? Answer: Yes",
            f"Question: does the {obj} leave the {word}? Answer: No",
            f"{adj.capitalize()} {word}, {adv} {verb}ed, {other} {word2}.",
            f'{{"goal": "By the end of the video, does the {color} {obj} reach the {place}?", '
            f'"process": ["Does the {obj} avoid {hazard}?", "Does the {obj} {verb2} {adv}?"]}}',
            f'{{"goal": "Is the {obj} {adj}?", "process": []}}',
            f"Frame {i}: the {obj} is in row {i % 9} and column {(i * 7) % 11}, step {i * 13 % 100}.",
        ]
    for n in range(0, 200):
        lines.append(f"{n} {n * 3 % 97} {n * 7 % 89}: {n % 10}.{(n * 7) % 10} seconds, "
                     f"<{n % 10}.{(n * 3) % 10} seconds> {n * 37 % 1000} frames, 0.{n % 10}")
    for i in range(0, len(common), 6):
        chunk = common[i:i + 6]
        lines.append(" ".join(chunk).capitalize() + ".")
        lines.append(", ".join(w.capitalize() for w in reversed(chunk)) + "?")
    answers = ["Yes", "No", "Yes.", "No.", "Yes, it does.", "No, it does not.", "yes", "no", "YES", "NO"]
    for i in range(400):
        a = answers[i % len(answers)]
        lines.append(f"{a} Yes No {a}")
        lines.append(f"The answer is {answers[(i + 1) % 2]}. {answers[i % 2]}")
    lines += [
        "Propose supervision questions on the processes and final objective of this task.",
        "Reply with strict JSON only, with the keys \"goal\" and \"process\".",
        "You are a careful teacher who grades videos. Look at the frames and answer the question.",
        "Watch the video. Describe what happens to the ball, the maze and the walls.",
        "{ } [ ] ( ) \" ' : , . ? ! - _ / * + = < > # @ % & ; ` ~ ^ | \\",
        "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u v w x y z",
    ]
    return lines


def _train_bpe(vocab_size: int):
    """Train a byte-level BPE with the same normalizer / pre-tokenizer Qwen2Tokenizer rebuilds on load."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    reference = Qwen2Tokenizer().backend_tokenizer  # library-provided Qwen pipeline, empty vocabulary
    tok = Tokenizer(models.BPE())
    tok.normalizer = reference.normalizer
    tok.pre_tokenizer = reference.pre_tokenizer
    tok.decoder = reference.decoder
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    return vocab, merges


def build_tiny_tokenizer(vocab_size: int = _TOKENIZER_VOCAB_SIZE):
    """The shared tiny tokenizer: a ``transformers.Qwen2Tokenizer`` (tokenizers backend).

    Byte-level BPE trained on the built-in corpus, the Qwen special tokens appended after the learned
    vocabulary (as in Qwen's own vocabularies), eos = ``<|im_end|>``, pad = ``<|endoftext|>``, and
    :data:`CHAT_TEMPLATE`. Deterministic (does not depend on any seed).
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe(vocab_size - len(QWEN_SPECIAL_TOKENS))
    # eos starts as <|endoftext|> so that the special tokens get consecutive ids in Qwen's order.
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                         eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=32768)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS], special_tokens=True)
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHAT_TEMPLATE
    expected = list(range(len(vocab), len(vocab) + len(QWEN_SPECIAL_TOKENS)))
    if tok.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS)) != expected or len(tok) != vocab_size:
        raise AssertionError("tiny tokenizer: unexpected special token ids or size")
    for word in ("Yes", "No", " Yes", " No"):
        ids = tok.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise AssertionError(f"tiny tokenizer splits {word!r} into {ids}")
    return tok


# ----------------------------------------------------------------------------------------------------
# Tiny Qwen-VL teachers
# ----------------------------------------------------------------------------------------------------

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
    _fill_module_(model, seed)
    model.eval()
    gen = model.generation_config
    gen.bos_token_id = ids["bos_token_id"]
    gen.eos_token_id = [ids["eos_token_id"], ids["pad_token_id"]]
    gen.pad_token_id = ids["pad_token_id"]
    gen.do_sample = False
    model.save_pretrained(out)


def _tiny_text_config(tok, ids: dict, **family) -> dict:
    """The language-model part shared by both tiny teachers; `family` adds or overrides fields."""
    return dict(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, hidden_act="silu", max_position_embeddings=32768,
                rms_norm_eps=1e-6, bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"],
                pad_token_id=ids["pad_token_id"], tie_word_embeddings=False, **family)


def build_tiny_qwen3vl(out_dir, seed: int = 0) -> pathlib.Path:
    """Write a tiny random Qwen3-VL checkpoint folder and return its path.

    Loadable with ``Qwen3VLForConditionalGeneration.from_pretrained(out_dir, local_files_only=True)`` and
    ``AutoProcessor.from_pretrained(out_dir, local_files_only=True)`` (a ``Qwen3VLProcessor``).
    Text: hidden 128, 2 layers, 4 heads (2 kv heads, head_dim 32), intermediate 256, interleaved M-RoPE
    with mrope_section [6, 5, 5]. Vision: depth 2, hidden 64, 2 heads, intermediate 128, patch 16,
    temporal patch 2, spatial merge 2, out_hidden_size 128, deepstack_visual_indexes [0].
    Processors as the real checkpoint's (mean = std = 0.5, fps 2, frame sampling on) but with small
    pixel budgets: video size shortest_edge 32*32*2 / longest_edge 32*32*64 (t*h*w pixels),
    image shortest_edge 32*32*4 / longest_edge 32*32*256. The folder is replaced if it exists.
    """
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    out = _fresh_dir(out_dir)
    tok = build_tiny_tokenizer()
    ids = _special_ids(tok)
    config = Qwen3VLConfig(
        text_config=_tiny_text_config(
            tok, ids, head_dim=32, attention_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                             "mrope_section": [6, 5, 5], "mrope_interleaved": True}),
        vision_config=dict(
            depth=2,
            hidden_size=64,
            hidden_act="gelu_pytorch_tanh",
            intermediate_size=128,
            num_heads=2,
            in_channels=3,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=128,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=False,
    )
    _save_hf_model(Qwen3VLForConditionalGeneration, config, out, seed, ids)

    half = [0.5, 0.5, 0.5]
    image_processor = Qwen2VLImageProcessor(
        patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=half, image_std=half,
        size={"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 256})
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=half, image_std=half,
        size={"shortest_edge": 32 * 32 * 2, "longest_edge": 32 * 32 * 64},
        fps=2, min_frames=4, max_frames=768, do_sample_frames=True, cap_pixels_per_frame=False)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                 chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_qwen25vl(out_dir, seed: int = 0) -> pathlib.Path:
    """Write a tiny random Qwen2.5-VL checkpoint folder and return its path.

    Same tokenizer and text sizes as :func:`build_tiny_qwen3vl` (M-RoPE section [4, 6, 6]). Vision: depth 2,
    hidden 64, 2 heads, intermediate 128, patch 14, temporal patch 2, merge 2, window_size 56 (2x2 merged
    tokens per window), fullatt_block_indexes [1], out_hidden_size 128. Processors use the Qwen2-VL
    defaults (CLIP mean/std) with small pixel budgets (per frame: 28*28*4 .. 28*28*64).
    """
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    out = _fresh_dir(out_dir)
    tok = build_tiny_tokenizer()
    ids = _special_ids(tok)
    config = Qwen2_5_VLConfig(
        text_config=_tiny_text_config(
            tok, ids, use_sliding_window=False, max_window_layers=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}),
        vision_config=dict(
            depth=2,
            hidden_size=64,
            hidden_act="silu",
            intermediate_size=128,
            num_heads=2,
            in_channels=3,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            tokens_per_second=2,
            window_size=56,
            out_hidden_size=128,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=False,
    )
    _save_hf_model(Qwen2_5_VLForConditionalGeneration, config, out, seed, ids)

    image_processor = Qwen2VLImageProcessor(
        patch_size=14, temporal_patch_size=2, merge_size=2,
        size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 256})
    video_processor = Qwen2VLVideoProcessor(
        patch_size=14, temporal_patch_size=2, merge_size=2,
        size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 64}, cap_pixels_per_frame=False)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                    chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------------------
# Tiny diffusers Wan transformer (host-independent reasoner for engine tests)
# ----------------------------------------------------------------------------------------------------

def build_tiny_diffusers_wan(seed: int = 0, **overrides):
    """A tiny Wan2.2-TI2V-5B-shaped ``diffusers.WanTransformer3DModel`` (float32, eval mode).

    48 latent channels in and out, patch (1, 2, 2), 2 heads of dim 32, 2 layers, ffn 128,
    text_dim :data:`TINY_DIFFUSERS_TEXT_DIM`, freq_dim 32, no image embedder. ``overrides`` go to the
    config. Accepts timesteps of shape [B] or per-token [B, seq_len] (Wan 2.2 TI2V style).
    """
    from diffusers import WanTransformer3DModel

    config = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=48,
        out_channels=48,
        text_dim=TINY_DIFFUSERS_TEXT_DIM,
        freq_dim=32,
        ffn_dim=128,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=None,
        added_kv_proj_dim=None,
        rope_max_seq_len=1024,
    )
    config.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WanTransformer3DModel(**config)
    _fill_module_(model, seed)
    return model.eval()


# ----------------------------------------------------------------------------------------------------
# ComfyUI-side files: Wan 2.2 TI2V-5B-layout diffusion model
# ----------------------------------------------------------------------------------------------------

def comfy_wan_shapes(dim: int = 128, layers: int = 2, ffn_dim: int = 256, in_dim: int = 48, out_dim: int = 48,
                     text_dim: int = 4096, freq_dim: int = 256) -> list[tuple[str, tuple[int, ...]]]:
    """Key names and shapes of an original-format Wan 2.x text/image-to-video checkpoint (no image embedder),
    as ComfyUI's ``comfy/ldm/wan/model.py`` ``WanModel`` names them. Wan 2.2 TI2V-5B: in = out = 48."""
    if dim % 128:
        raise ValueError(f"dim must be a multiple of 128 (ComfyUI derives heads = dim // 128), got {dim}")
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("patch_embedding.weight", (dim, in_dim, 1, 2, 2)),
        ("patch_embedding.bias", (dim,)),
        ("text_embedding.0.weight", (dim, text_dim)),
        ("text_embedding.0.bias", (dim,)),
        ("text_embedding.2.weight", (dim, dim)),
        ("text_embedding.2.bias", (dim,)),
        ("time_embedding.0.weight", (dim, freq_dim)),
        ("time_embedding.0.bias", (dim,)),
        ("time_embedding.2.weight", (dim, dim)),
        ("time_embedding.2.bias", (dim,)),
        ("time_projection.1.weight", (6 * dim, dim)),
        ("time_projection.1.bias", (6 * dim,)),
        ("head.head.weight", (out_dim * 4, dim)),
        ("head.head.bias", (out_dim * 4,)),
        ("head.modulation", (1, 2, dim)),
    ]
    for i in range(layers):
        b = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                shapes += [(f"{b}{attn}.{proj}.weight", (dim, dim)), (f"{b}{attn}.{proj}.bias", (dim,))]
            shapes += [(f"{b}{attn}.norm_q.weight", (dim,)), (f"{b}{attn}.norm_k.weight", (dim,))]
        shapes += [
            (f"{b}norm3.weight", (dim,)),
            (f"{b}norm3.bias", (dim,)),
            (f"{b}ffn.0.weight", (ffn_dim, dim)),
            (f"{b}ffn.0.bias", (ffn_dim,)),
            (f"{b}ffn.2.weight", (dim, ffn_dim)),
            (f"{b}ffn.2.bias", (dim,)),
            (f"{b}modulation", (1, 6, dim)),
        ]
    return shapes


def _transformer_fill(seed: int, std: float = 0.02) -> Callable[[str, tuple], torch.Tensor]:
    def make(name: str, shape: tuple) -> torch.Tensor:
        if name.endswith(".bias"):
            return torch.zeros(shape)
        if len(shape) == 1:
            return torch.ones(shape)
        return _normal(shape, std, seed, name)
    return make


def write_tiny_comfy_wan(path, seed: int = 0, dim: int = 128, layers: int = 2, ffn_dim: int = 256,
                         dtype: torch.dtype = torch.float32) -> pathlib.Path:
    """Write a tiny Wan 2.2 TI2V-5B-layout diffusion model (safetensors) and return its path.

    Stock ``UNETLoader`` / ``comfy.sd.load_diffusion_model`` detects it as Wan 2.2 5B (``WAN22``,
    latent format ``Wan22``): in_dim = out_dim = 48, text_dim 4096, freq_dim 256, heads = dim // 128.
    Biases zero, norm scales one, everything else N(0, 0.02).
    """
    return _write_safetensors(path, comfy_wan_shapes(dim, layers, ffn_dim), _transformer_fill(seed), dtype,
                              metadata={"tiny_models": TINY_VERSION, "seed": seed, "kind": "wan2.2-ti2v-5b-layout"})


# ----------------------------------------------------------------------------------------------------
# ComfyUI-side files: Wan 2.2 VAE (full width, random)
# ----------------------------------------------------------------------------------------------------

def _conv_shapes(prefix: str, c_out: int, c_in: int, kernel: tuple[int, ...], bias: bool = True) -> list:
    out = [(f"{prefix}.weight", (c_out, c_in, *kernel))]
    if bias:
        out.append((f"{prefix}.bias", (c_out,)))
    return out


def _wan_vae_resblock(prefix: str, c_in: int, c_out: int) -> list:
    shapes = [(f"{prefix}.residual.0.gamma", (c_in, 1, 1, 1))]
    shapes += _conv_shapes(f"{prefix}.residual.2", c_out, c_in, (3, 3, 3))
    shapes += [(f"{prefix}.residual.3.gamma", (c_out, 1, 1, 1))]
    shapes += _conv_shapes(f"{prefix}.residual.6", c_out, c_out, (3, 3, 3))
    if c_in != c_out:
        shapes += _conv_shapes(f"{prefix}.shortcut", c_out, c_in, (1, 1, 1))
    return shapes


def _wan_vae_attention(prefix: str, c: int) -> list:
    return ([(f"{prefix}.norm.gamma", (c, 1, 1))] + _conv_shapes(f"{prefix}.to_qkv", 3 * c, c, (1, 1))
            + _conv_shapes(f"{prefix}.proj", c, c, (1, 1)))


def wan22_vae_shapes(dim: int = 160, dec_dim: int = 256, z_dim: int = 48) -> list[tuple[str, tuple[int, ...]]]:
    """Key names and shapes of the Wan 2.2 VAE state dict (the 48-channel, 16x16x4 one), as ComfyUI's
    ``comfy/ldm/wan/vae2_2.py`` builds it (widths hard-coded there: encoder 160, decoder 256,
    multipliers 1, 2, 4, 4, two residual blocks per level, temporal downsampling at levels 1 and 2)."""
    mult = [1, 2, 4, 4]
    t_down = [False, True, True]
    shapes: list = []
    # encoder (input: 3 channels patchified 2x2 -> 12)
    dims = [dim * m for m in [1] + mult]
    shapes += _conv_shapes("encoder.conv1", dims[0], 12, (3, 3, 3))
    for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
        p = f"encoder.downsamples.{i}.downsamples"
        c = c_in
        for j in range(2):
            shapes += _wan_vae_resblock(f"{p}.{j}", c, c_out)
            c = c_out
        if i != len(mult) - 1:
            shapes += _conv_shapes(f"{p}.2.resample.1", c_out, c_out, (3, 3))
            if t_down[i]:
                shapes += _conv_shapes(f"{p}.2.time_conv", c_out, c_out, (3, 1, 1))
    c = dims[-1]
    shapes += _wan_vae_resblock("encoder.middle.0", c, c) + _wan_vae_attention("encoder.middle.1", c)
    shapes += _wan_vae_resblock("encoder.middle.2", c, c)
    shapes += [("encoder.head.0.gamma", (c, 1, 1, 1))] + _conv_shapes("encoder.head.2", 2 * z_dim, c, (3, 3, 3))
    shapes += _conv_shapes("conv1", 2 * z_dim, 2 * z_dim, (1, 1, 1))
    shapes += _conv_shapes("conv2", z_dim, z_dim, (1, 1, 1))
    # decoder
    dims = [dec_dim * m for m in [mult[-1]] + mult[::-1]]
    t_up = t_down[::-1]
    shapes += _conv_shapes("decoder.conv1", dims[0], z_dim, (3, 3, 3))
    c = dims[0]
    shapes += _wan_vae_resblock("decoder.middle.0", c, c) + _wan_vae_attention("decoder.middle.1", c)
    shapes += _wan_vae_resblock("decoder.middle.2", c, c)
    for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
        p = f"decoder.upsamples.{i}.upsamples"
        c = c_in
        for j in range(3):
            shapes += _wan_vae_resblock(f"{p}.{j}", c, c_out)
            c = c_out
        if i != len(mult) - 1:
            shapes += _conv_shapes(f"{p}.3.resample.1", c_out, c_out, (3, 3))
            if t_up[i]:
                shapes += _conv_shapes(f"{p}.3.time_conv", 2 * c_out, c_out, (3, 1, 1))
    shapes += [("decoder.head.0.gamma", (dims[-1], 1, 1, 1))]
    shapes += _conv_shapes("decoder.head.2", 12, dims[-1], (3, 3, 3))
    return shapes


def _conv_fill(seed: int, gains: Callable[[str], float]) -> Callable[[str, tuple], torch.Tensor]:
    """Conv weights N(0, gain^2 / fan_in), biases zero, norm scales (gamma) one."""
    def make(name: str, shape: tuple) -> torch.Tensor:
        if name.endswith(".bias"):
            return torch.zeros(shape)
        if name.endswith(".gamma"):
            return torch.ones(shape)
        fan_in = math.prod(shape[1:])
        return _normal(shape, gains(name) / math.sqrt(fan_in), seed, name)
    return make


def _wan_vae_gain(name: str) -> float:
    if name.startswith("decoder.head.2."):
        return 0.5      # decoded pixels in [-1, 1] mostly, so the clamp in ComfyUI rarely saturates
    if ".residual.6." in name or name.endswith("proj.weight"):
        return 0.5      # tame the growth of the residual stream
    return 1.0


def write_tiny_wan22_vae(path, seed: int = 0) -> pathlib.Path:
    """Write a random full-width Wan 2.2 VAE (float16 safetensors, ~705 M parameters, ~1.4 GB).

    Stock ``VAELoader`` / ``comfy.sd.VAE(sd=...)`` builds the Wan 2.2 VAE from it (detected by
    ``decoder.upsamples.0.upsamples.0.residual.2.weight``): it encodes (unlike the TAEHV) and decodes.
    Weights are N(0, gain^2 / fan_in), generated and written one tensor at a time.
    """
    return _write_safetensors(path, wan22_vae_shapes(), _conv_fill(seed, _wan_vae_gain), torch.float16,
                              metadata={"tiny_models": TINY_VERSION, "seed": seed, "kind": "wan2.2-vae"})


# ----------------------------------------------------------------------------------------------------
# ComfyUI-side files: 48-channel TAEHV (taew2_2 / lighttaew2_2 layout), decode-only in ComfyUI
# ----------------------------------------------------------------------------------------------------

def _taehv_memblock(prefix: str, c_in: int, c_out: int) -> list:
    shapes = _conv_shapes(f"{prefix}.conv.0", c_out, 2 * c_in, (3, 3))
    shapes += _conv_shapes(f"{prefix}.conv.2", c_out, c_out, (3, 3))
    shapes += _conv_shapes(f"{prefix}.conv.4", c_out, c_out, (3, 3))
    if c_in != c_out:
        shapes += _conv_shapes(f"{prefix}.skip", c_out, c_in, (1, 1), bias=False)
    return shapes


def taehv_shapes(latent_channels: int = 48, patch_size: int = 2) -> list[tuple[str, tuple[int, ...]]]:
    """Key names and shapes of a TAEHV state dict as ComfyUI's ``comfy/taesd/taehv.py`` lays it out
    (``encoder.N`` / ``decoder.N`` Sequential indices). 48 latent channels = Wan 2.2 (2x2 pixel patches)."""
    img = 3 * patch_size * patch_size
    shapes: list = []
    # encoder: conv, act, [TPool, strided conv, 3 MemBlocks] x 3, conv
    shapes += _conv_shapes("encoder.0", 64, img, (3, 3))
    idx = 2
    for stride in (2, 2, 1):
        shapes += _conv_shapes(f"encoder.{idx}.conv", 64, 64 * stride, (1, 1), bias=False)
        shapes += _conv_shapes(f"encoder.{idx + 1}", 64, 64, (3, 3), bias=False)
        for k in range(3):
            shapes += _taehv_memblock(f"encoder.{idx + 2 + k}", 64, 64)
        idx += 5
    shapes += _conv_shapes(f"encoder.{idx}", latent_channels, 64, (3, 3))
    # decoder: Clamp, conv, act, [3 MemBlocks, Upsample, TGrow, conv] x 3, act, conv
    n_f = [256, 128, 64, 64]
    shapes += _conv_shapes("decoder.1", n_f[0], latent_channels, (3, 3))
    idx = 3
    for level, t_stride in enumerate((1, 2, 2)):
        c = n_f[level]
        for k in range(3):
            shapes += _taehv_memblock(f"decoder.{idx + k}", c, c)
        shapes += _conv_shapes(f"decoder.{idx + 4}.conv", c * t_stride, c, (1, 1), bias=False)
        shapes += _conv_shapes(f"decoder.{idx + 5}", n_f[level + 1], c, (3, 3), bias=False)
        idx += 6
    shapes += _conv_shapes(f"decoder.{idx + 1}", img, n_f[3], (3, 3))
    return shapes


def _taehv_gain(name: str) -> float:
    if name == "decoder.22.weight":
        return 0.2      # output = 0.5 + small: frames stay inside [0, 1] (ComfyUI does not clamp them)
    if ".conv.4." in name:
        return 0.5      # last conv of each MemBlock: keep the residual stream from growing
    return 1.0


def write_tiny_taehv(path, seed: int = 0) -> pathlib.Path:
    """Write a random 48-channel TAEHV (Wan 2.2 tiny decoder, float16 safetensors) and return its path.

    Stock ``VAELoader`` / ``comfy.sd.VAE(sd=...)`` detects it by ``decoder.22.bias`` with
    ``decoder.1.weight`` taking 48 channels, and decodes [B, 48, T, h, w] latents to
    [B, 4T-3, 16h, 16w, 3] frames (ComfyUI: decode only, no clamp, so the output conv carries a 0.5 bias
    and small weights to keep frames inside [0, 1]).
    """
    base = _conv_fill(seed, _taehv_gain)

    def make(name: str, shape: tuple) -> torch.Tensor:
        if name == "decoder.22.bias":
            return torch.full(shape, 0.5)
        return base(name, shape)

    return _write_safetensors(path, taehv_shapes(), make, torch.float16,
                              metadata={"tiny_models": TINY_VERSION, "seed": seed, "kind": "taehv-wan2.2"})


# ----------------------------------------------------------------------------------------------------
# Conditioning stand-in (umt5-xxl output cannot be had here)
# ----------------------------------------------------------------------------------------------------

def tiny_conditioning(seed: int = 0, tokens: int = 16, dim: int = 4096) -> torch.Tensor:
    """A deterministic stand-in for text-encoder output: float32 [1, tokens, dim], N(0, 1)."""
    return _normal((1, tokens, dim), 1.0, seed, f"conditioning/{tokens}x{dim}")


def write_tiny_conditioning(path, seed: int = 0, tokens: int = 16, dim: int = 4096) -> pathlib.Path:
    """Write :func:`tiny_conditioning` to a safetensors file under the key :data:`CONDITIONING_KEY`
    (``"conditioning"``, float32 [1, tokens, dim]) and return its path."""
    cond = tiny_conditioning(seed, tokens, dim)
    return _write_safetensors(path, [(CONDITIONING_KEY, tuple(cond.shape))], lambda name, shape: cond,
                              torch.float32, metadata={"tiny_models": TINY_VERSION, "seed": seed,
                                                       "kind": "conditioning"})


# ----------------------------------------------------------------------------------------------------
# Demo layout
# ----------------------------------------------------------------------------------------------------

MANIFEST_NAME = "tiny_models_manifest.json"

#: item -> path inside a ComfyUI ``models/`` folder
DEMO_LAYOUT = {
    "diffusion_model": "diffusion_models/tiny_wan22_ti2v.safetensors",
    "vae": "vae/tiny_wan22_vae.safetensors",
    "taehv": "vae/tiny_taew2_2.safetensors",
    "teacher": "LLM/tiny-qwen3-vl",
    "conditioning": "conditioning/tiny_prompt.safetensors",
}


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _content(path: pathlib.Path) -> dict | None:
    """{relative file: sha256} for a file or a folder; None if absent."""
    if path.is_file():
        return {path.name: _sha256(path)}
    if path.is_dir():
        return {p.relative_to(path).as_posix(): _sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return None


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
        current = _content(path)
        if (isinstance(entry, dict) and entry.get("seed") == seed and entry.get("builder") == tag
                and entry.get("path") == rel and current is not None and entry.get("files") == current):
            status = "kept"
        else:
            builders[item](path)
            current = _content(path)
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
