"""The loop's three models at a chosen size, built the way ComfyUI and the pack build them.

- Reasoner: the host's `comfy.ldm.wan.model.WanModel`, from a state dict in the original Wan key layout
  run through ComfyUI's own detection (`model_detection.model_config_from_unet`), the dtype choice
  UNETLoader makes on a CUDA card (bf16 weights run as they are; fp8_e4m3fn weights are cast to bf16
  layer by layer, ComfyUI's manual cast), `get_model`, `load_model_weights` and a `ModelPatcher`.
- Loop decoder: a 48-channel TAEHV through `comfy.sd.VAE` (what VAELoader does with taew2_2).
- Teacher: transformers' Qwen3-VL from a config folder, wrapped in the pack's `VLMTeacher` exactly as
  `VLMTeacher.from_pretrained` wraps a loaded checkpoint (the weights are random: none can be had here), on
  the offload device with its ModelPatcher, as VLMTeacherLoader leaves it (`nodes.teacher_memory.manage`).

A `World` says where tensors live: "fake" (shapes without data, on CPU), "cpu" or "cuda" (real, random).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .accounting import fake_mode

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK = "vlm_teacher_pack"  # the repository imported as the package ComfyUI would load it as
QWEN3_VL_4B = REPO_ROOT / "benchmarks" / "configs" / "qwen3_vl_4b_instruct"

# Wan 2.2 TI2V-5B (the Wan team's wan/configs/wan_ti2v_5B.py; ComfyUI derives heads = dim // 128 and
# in = out = 48 from the checkpoint's shapes).
WAN22_TI2V_5B = dict(dim=3072, ffn_dim=14336, layers=30)


class World:
    """Where the run's tensors live. "fake": no data (any size fits); "cpu"/"cuda": real random weights."""

    def __init__(self, kind: str):
        if kind not in ("fake", "cpu", "cuda"):
            raise ValueError(f"Unknown device {kind!r}: use fake, cpu or cuda.")
        self.kind = kind
        self.mode = fake_mode() if kind == "fake" else None
        self.ledger = None  # an accounting mode that must stay on top of the fake mode while building

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.kind == "cuda" else "cpu")

    @contextlib.contextmanager
    def building(self):
        """Tensors made inside are fake in the fake world (weights, the LoRA), real elsewhere."""
        with contextlib.ExitStack() as stack:
            if self.mode is not None:
                stack.enter_context(self.mode)
                if self.ledger is not None:
                    stack.enter_context(self.ledger)
            yield

    def weight(self, shape, dtype, std: float | None, generator: torch.Generator) -> torch.Tensor:
        """A checkpoint tensor in CPU memory, as a loader reads it: uninitialised when fake; otherwise
        N(0, std), or ones when std is None (drawn on the GPU when there is one: 5 B numbers are slow on CPU)."""
        if self.kind == "fake":
            return torch.empty(shape, dtype=dtype)
        if std is None:
            return torch.ones(shape, dtype=dtype)
        return (torch.randn(shape, generator=generator, device=generator.device) * std).to(dtype).cpu()

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(seed)


# ----------------------------------------------------------------------------------------------------
# The host and the pack

def import_host(world: World):
    """Put the ComfyUI host ($TTO_COMFYUI) on sys.path, configured for `world`, and import the pack.

    Returns the pack's package (its `nodes.comfy_reasoner` and `tto_engine` are what the node uses)."""
    root = os.environ.get("TTO_COMFYUI")
    if not root or not (Path(root) / "comfy").is_dir():
        raise RuntimeError("Set TTO_COMFYUI to a ComfyUI folder (scripts/setup_env.sh prints its parent).")
    if root not in sys.path:
        sys.path.insert(0, root)  # before the repository, whose nodes/ folder must not shadow nodes.py
    import comfy.cli_args

    if world.kind != "cuda":
        comfy.cli_args.args.cpu = True
        comfy.cli_args.args.use_pytorch_cross_attention = True  # SDPA, as ComfyUI picks on CUDA cards
    from tto_runner.paths import import_as_pack

    import_as_pack(PACK)
    for sub in ("nodes.comfy_reasoner", "nodes.loop_decoders", "nodes.teacher_memory", "tto_engine",
                "tto_engine.presets", "tto_models.tokenizer", "tto_models.vae", "tto_models.wan"):
        importlib.import_module(f"{PACK}.{sub}")
    return sys.modules[PACK]


# ----------------------------------------------------------------------------------------------------
# Reasoner

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
           "fp8_e4m3fn": torch.float8_e4m3fn}


def dtype_of(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"Unknown dtype {name!r}; one of {', '.join(_DTYPES)}.") from None


def build_wan(pack, world: World, dims: dict, weight_dtype: str, compute_dtype: str = "bf16", seed: int = 0):
    """A ComfyUI MODEL (ModelPatcher) holding the host's WanModel with the Wan 2.2 TI2V-5B layout."""
    import comfy.model_detection
    import comfy.model_management
    import comfy.model_patcher

    weights, compute = dtype_of(weight_dtype), dtype_of(compute_dtype)
    generator = world.generator(seed)
    shapes = pack.tto_models.wan.comfy_wan_shapes(dim=dims["dim"], layers=dims["layers"], ffn_dim=dims["ffn_dim"])
    with world.building():
        sd = {}
        for name, shape in shapes:
            if name.endswith(".bias"):
                sd[name] = world.weight(shape, weights, 0.0, generator)
            elif len(shape) == 1:
                sd[name] = world.weight(shape, weights, None, generator)  # norm scales
            else:
                sd[name] = world.weight(shape, weights, 0.02, generator)
        config = comfy.model_detection.model_config_from_unet(sd, "")
        if config is None or config.unet_config.get("out_dim") != 48:
            raise RuntimeError("ComfyUI did not detect the state dict as Wan 2.2 TI2V-5B.")
        config.set_inference_dtype(weights, None if weights == compute else compute)
        model = config.get_model(sd, "")
        model.load_model_weights(sd, "")
    # The sampling schedule (sigmas) must hold real values even in the fake world.
    model.model_sampling = type(model.model_sampling)(config)
    del sd
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


# ----------------------------------------------------------------------------------------------------
# Loop decoder

def build_taehv(pack, world: World, dtype: str = "bf16", seed: int = 0):
    """A Wan 2.2 TAEHV (taew2_2 layout) as stock VAELoader builds it; random weights."""
    import comfy.sd

    generator = world.generator(seed)
    with world.building():
        sd = {}
        for name, shape in pack.tto_models.vae.taehv_shapes():
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            sd[name] = world.weight(shape, torch.float16, 0.0 if len(shape) == 1 else 1 / math.sqrt(fan_in),
                                    generator)
        vae = comfy.sd.VAE(sd=sd, dtype=dtype_of(dtype))
    vae.first_stage_model.show_progress_bar = False
    return vae


# ----------------------------------------------------------------------------------------------------
# Teacher

@dataclass(frozen=True)
class TeacherSettings:
    checkpointing: bool = True   # VLMTeacherLoader's gradient_checkpointing (on by default)
    pixels: int = 0              # VLMTeacherLoader's max_video_pixels (0: the checkpoint's own)
    dtype: str = "bf16"


def qwen3_vl_config(folder: Path = QWEN3_VL_4B, tokenizer=None, text: dict | None = None,
                    vision: dict | None = None):
    """The checkpoint's config with the special-token ids of `tokenizer` (the tiny tokenizer stands in
    for Qwen's, whose files cannot be had here; the vocabulary size stays the checkpoint's)."""
    from transformers import Qwen3VLConfig

    raw = json.loads((folder / "config.json").read_text())
    raw["text_config"].update(text or {})
    raw["vision_config"].update(vision or {})
    if tokenizer is not None:
        ids = dict(zip(("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"),
                       tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                        "<|vision_end|>"])))
        raw.update(ids)
    return Qwen3VLConfig(**raw)


def build_teacher(pack, world: World, settings: TeacherSettings, config_folder: Path = QWEN3_VL_4B,
                  overrides: dict | None = None, seed: int = 0):
    """The pack's VLMTeacher around a random Qwen3-VL built from `config_folder`'s config, with
    `overrides` ({"text": {...}, "vision": {...}}) applied (smaller models for tests). Like VLMTeacherLoader
    leaves it: on the offload device with its ModelPatcher, which the loop has ComfyUI load."""
    import comfy.model_management
    from transformers import Qwen3VLForConditionalGeneration

    tokenizer = pack.tto_models.tokenizer.build_tiny_tokenizer()
    config = qwen3_vl_config(Path(config_folder), tokenizer, **dict(overrides or {}))
    torch.manual_seed(seed)
    # Random weights are drawn on the GPU when there is one (4 B numbers are slow on a CPU), then offloaded.
    device = torch.device("cuda") if world.kind == "cuda" else contextlib.nullcontext()
    with world.building(), device:
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype_of(settings.dtype)).eval()
        if settings.checkpointing:  # as VLMTeacher.from_pretrained(gradient_checkpointing=True) does
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(comfy.model_management.text_encoder_offload_device())
    spec = pack.tto_engine.teacher.VisionSpec.from_folder(Path(config_folder), "qwen3_vl")
    teacher = pack.tto_engine.VLMTeacher(model, tokenizer, spec, settings.pixels or None,
                                         checkpointing=settings.checkpointing)
    pack.nodes.teacher_memory.manage(teacher)
    return teacher
