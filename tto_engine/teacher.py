"""The teacher: a Qwen-VL model that grades video frames against yes/no queries, differentiably.

Per query the loss is the teacher-forced negative log-likelihood of the expected answer ("Yes") given the
frames and the question, over the full vocabulary. Preprocessing is done in torch so gradients reach the
pixels, with the checkpoint's own processor settings; the prompt is built with the checkpoint's own chat
template; one vision-encoder pass serves every query of a call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .checkpoints import check_vlm_folder, read_json
from .queries import (Query, QueryProposal, build_query_request, build_rewrite_request, clean_rewrite,
                      parse_query_proposal, require_queries)

# Per family: model class, and processor defaults used when the checkpoint's config omits a value.
_FAMILIES = {
    "qwen3_vl": dict(model_class="Qwen3VLForConditionalGeneration", patch_size=16, temporal_patch_size=2,
                     merge_size=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                     video_min_pixels=128 * 32 * 32, video_max_pixels=768 * 32 * 32,
                     image_min_pixels=56 * 56, image_max_pixels=28 * 28 * 1280),
    "qwen2_5_vl": dict(model_class="Qwen2_5_VLForConditionalGeneration", patch_size=14, temporal_patch_size=2,
                       merge_size=2, mean=(0.48145466, 0.4578275, 0.40821073),
                       std=(0.26862954, 0.26130258, 0.27577711),
                       video_min_pixels=128 * 28 * 28, video_max_pixels=768 * 28 * 28,
                       image_min_pixels=56 * 56, image_max_pixels=28 * 28 * 1280),
}

SUPPORTED_FAMILIES = tuple(_FAMILIES)
TEXT, IMAGE, VIDEO = 0, 1, 2  # mm_token_type_ids values


@dataclass(frozen=True)
class VisionSpec:
    """How the checkpoint's processor turns pixels into patches (read from its processor configs)."""
    family: str
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    mean: tuple
    std: tuple
    video_min_pixels: int
    video_max_pixels: int
    image_min_pixels: int
    image_max_pixels: int

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_folder(cls, folder: Path, family: str) -> "VisionSpec":
        d = dict(_FAMILIES[family])
        d.pop("model_class")

        def read(name):
            p = folder / name
            return read_json(p) if p.exists() else {}

        proc = read("processor_config.json")
        image_cfg = read("preprocessor_config.json") or proc.get("image_processor", {})
        video_cfg = read("video_preprocessor_config.json") or proc.get("video_processor", {}) or image_cfg

        def pixels(cfg, lo, hi):
            size = cfg.get("size") or {}
            d[lo] = int(cfg.get("min_pixels", size.get("shortest_edge", d[lo])))
            d[hi] = int(cfg.get("max_pixels", size.get("longest_edge", d[hi])))

        pixels(image_cfg, "image_min_pixels", "image_max_pixels")
        pixels(video_cfg, "video_min_pixels", "video_max_pixels")
        for key in ("patch_size", "temporal_patch_size", "merge_size"):
            d[key] = int(video_cfg.get(key, image_cfg.get(key, d[key])))
        d["mean"] = tuple(video_cfg.get("image_mean", d["mean"]))
        d["std"] = tuple(video_cfg.get("image_std", d["std"]))
        return cls(family=family, **d)


def _resize_per_frame(h, w, factor, min_pixels, max_pixels):
    """Qwen2-VL rule: sides multiples of `factor`, pixels per frame within [min, max], aspect kept."""
    if max(h, w) / min(h, w) > 200:
        raise ValueError(f"Aspect ratio {max(h, w) / min(h, w):.0f} is too extreme for the teacher (max 200).")
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def _resize_whole_clip(t, h, w, factor, temporal, min_pixels, max_pixels):
    """Qwen3-VL rule: the pixel budget covers the whole clip (frames x height x width)."""
    if h < factor or w < factor:
        scale = max(factor / h, factor / w)
        h, w = int(h * scale), int(w * scale)
    if max(h, w) / min(h, w) > 200:
        raise ValueError(f"Aspect ratio {max(h, w) / min(h, w):.0f} is too extreme for the teacher (max 200).")
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    tb = round(t / temporal) * temporal
    if tb * hb * wb > max_pixels:
        beta = math.sqrt(t * h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif tb * hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (t * h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


@dataclass
class TeacherScores:
    losses: torch.Tensor  # [Q] NLL of each query's expected answer (differentiable)
    scores: torch.Tensor  # [Q] P(expected) / (P(Yes) + P(No)) at the answer position, detached, for display
    p_yes: torch.Tensor   # [Q] P("Yes") over the full vocabulary, detached


class VLMTeacher:
    """Wraps a Qwen3-VL / Qwen2.5-VL model and its tokenizer. Frames are [T, 3, H, W] floats in [0, 1]."""

    def __init__(self, model, tokenizer, spec: VisionSpec, max_video_pixels: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.max_video_pixels = max_video_pixels or spec.video_max_pixels
        self.model.requires_grad_(False)
        cfg = model.config
        self.video_token_id = cfg.video_token_id
        self.image_token_id = cfg.image_token_id
        self.video_token = tokenizer.convert_ids_to_tokens(self.video_token_id)
        self.image_token = tokenizer.convert_ids_to_tokens(self.image_token_id)
        self.vision_start = tokenizer.convert_ids_to_tokens(cfg.vision_start_token_id)
        self.vision_end = tokenizer.convert_ids_to_tokens(cfg.vision_end_token_id)
        self.answer_ids = {a: self._single_answer_ids(a) for a in ("Yes", "No")}

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder, dtype=torch.bfloat16, device="cpu", attn_implementation: str | None = None,
                        max_video_pixels: int | None = None, gradient_checkpointing: bool = False) -> "VLMTeacher":
        """Load from a local folder only (no hub access, no remote code)."""
        import transformers

        folder = Path(folder)
        model_type = check_vlm_folder(folder, SUPPORTED_FAMILIES)
        model_class = getattr(transformers, _FAMILIES[model_type]["model_class"])
        # Local safetensors only: no hub, no pickles, no code from the folder.
        kwargs = dict(local_files_only=True, use_safetensors=True, trust_remote_code=False, dtype=dtype)
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        model = model_class.from_pretrained(folder, **kwargs).to(device).eval()
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()  # HF only checkpoints in training mode; these models have no dropout
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        return cls(model, tokenizer, VisionSpec.from_folder(folder, model_type), max_video_pixels)

    @property
    def device(self):
        return self.model.device

    def _single_answer_ids(self, answer: str) -> list[int]:
        ids = self.tokenizer.encode(answer, add_special_tokens=False)
        if not ids:
            raise ValueError(f"The tokenizer cannot encode the answer {answer!r}.")
        return ids

    # ---------------------------------------------------------------------------------------------
    # Pixels -> patches, in torch (differentiable), mirroring the checkpoint's processor.

    def video_size(self, t: int, h: int, w: int) -> tuple[int, int]:
        s = self.spec
        if s.family == "qwen3_vl":
            return _resize_whole_clip(t, h, w, s.factor, s.temporal_patch_size, s.video_min_pixels,
                                      self.max_video_pixels)
        return _resize_per_frame(h, w, s.factor, s.video_min_pixels, self.max_video_pixels)

    def preprocess_video(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[T, 3, H, W] in [0, 1] -> (pixel patches [N, 3*tp*p*p], grid_thw [1, 3])."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"Frames must be [T, 3, H, W]; got {tuple(frames.shape)}.")
        t, _, h, w = frames.shape
        return self._patchify(frames, self.video_size(t, h, w))

    def preprocess_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[3, H, W] in [0, 1] -> (pixel patches, grid_thw); an image is one frame repeated in time."""
        s = self.spec
        size = _resize_per_frame(image.shape[-2], image.shape[-1], s.factor, s.image_min_pixels, s.image_max_pixels)
        return self._patchify(image.unsqueeze(0), size)

    def _patchify(self, frames, size):
        s = self.spec
        frames = frames.to(torch.promote_types(frames.dtype, torch.float32))
        if tuple(frames.shape[-2:]) != tuple(size):
            frames = F.interpolate(frames, size=size, mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(s.mean, device=frames.device, dtype=frames.dtype).view(1, 3, 1, 1)
        std = torch.tensor(s.std, device=frames.device, dtype=frames.dtype).view(1, 3, 1, 1)
        frames = (frames - mean) / std
        if pad := -frames.shape[0] % s.temporal_patch_size:
            frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
        t, c, h, w = frames.shape
        p, m, tp = s.patch_size, s.merge_size, s.temporal_patch_size
        gt, gh, gw = t // tp, h // p, w // p
        x = frames.view(gt, tp, c, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # merge-window order, then (C, tp, p, p) within a patch
        patches = x.reshape(gt * gh * gw, c * tp * p * p)
        return patches, torch.tensor([[gt, gh, gw]], device=frames.device)

    # ---------------------------------------------------------------------------------------------
    # Prompts from the checkpoint's own chat template.

    def _chat_text(self, content: list[dict]) -> str:
        messages = [{"role": "user", "content": content}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def video_placeholder(self, grid_thw: torch.Tensor, timestamps: Sequence[float]) -> str:
        """The text that stands for the video in the prompt (Qwen3-VL adds a timestamp per frame group)."""
        gt, gh, gw = (int(v) for v in grid_thw[0])
        per_group = gh * gw // self.spec.merge_size ** 2
        if self.spec.family != "qwen3_vl":
            return self.video_token * (gt * per_group)
        tp = self.spec.temporal_patch_size
        times = list(timestamps) + [timestamps[-1]] * (-len(timestamps) % tp)
        group_times = [(times[i] + times[i + tp - 1]) / 2 for i in range(0, len(times), tp)]
        return "".join(f"<{group_times[g]:.1f} seconds>" + self.vision_start + self.video_token * per_group
                       + self.vision_end for g in range(gt))

    def _video_text(self, question: str, placeholder: str) -> str:
        text = self._chat_text([{"type": "video"}, {"type": "text", "text": question}])
        if text.count(self.video_token) != 1:
            raise ValueError("The checkpoint's chat template does not place exactly one video token for a video.")
        return text.replace(self.video_token, placeholder)

    def video_prompt(self, question: str, grid_thw, timestamps: Sequence[float]) -> tuple[list[int], list[int]]:
        """Token ids and mm_token_type_ids for one question about one video, ending at the answer position."""
        ids = self.tokenizer.encode(self._video_text(question, self.video_placeholder(grid_thw, timestamps)),
                                    add_special_tokens=False)
        types = [VIDEO if i == self.video_token_id else TEXT for i in ids]
        return ids, types

    # ---------------------------------------------------------------------------------------------
    def score(self, frames: torch.Tensor, queries: Sequence[Query], timestamps: Sequence[float] | None = None,
              share_vision: bool = True) -> TeacherScores:
        """Grade frames [T, 3, H, W] in [0, 1] against every query at once (one vision pass, batched text).

        `timestamps` are the frames' times in seconds (default: 2 frames per second).
        """
        queries = require_queries(queries)
        if timestamps is None:
            timestamps = [i / 2.0 for i in range(frames.shape[0])]
        if len(timestamps) != frames.shape[0]:
            raise ValueError(f"{len(timestamps)} timestamps for {frames.shape[0]} frames.")
        model = self.model
        pixels, grid = self.preprocess_video(frames.to(self.device))
        n = len(queries)

        rows, types, targets = [], [], []
        for q in queries:
            ids, tt = self.video_prompt(q.text, grid, timestamps)
            answer = self.answer_ids[q.answer]
            rows.append(ids + answer[:-1])
            types.append(tt + [TEXT] * (len(answer) - 1))
            targets.append(answer)
        width = max(map(len, rows))
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((n, width), pad_id, dtype=torch.long)
        token_types = torch.zeros((n, width), dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, (r, tt) in enumerate(zip(rows, types)):  # left padding: answers line up at the end
            input_ids[i, width - len(r):] = torch.tensor(r)
            token_types[i, width - len(r):] = torch.tensor(tt)
            attention[i, width - len(r):] = 1
        dev = self.device
        kwargs = dict(input_ids=input_ids.to(dev), attention_mask=attention.to(dev),
                      mm_token_type_ids=token_types.to(dev), video_grid_thw=grid.repeat(n, 1),
                      use_cache=False, logits_to_keep=max(map(len, targets)))
        if self.spec.family == "qwen2_5_vl":
            kwargs["second_per_grid_ts"] = torch.tensor([self._seconds_per_grid(timestamps)] * n, device=dev)
        if share_vision:
            encoded = model.model.get_video_features(pixels, grid, return_dict=True)
            kwargs["mm_encoder_outputs"] = {"video": _repeat_encoder_output(encoded, n)}
        else:
            kwargs["pixel_values_videos"] = pixels.repeat(n, 1)
        logits = model(**kwargs).logits
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # [n, keep, vocab]

        log_probs = logits.log_softmax(-1)
        keep = logits.shape[1]
        losses = []
        for i, answer in enumerate(targets):
            positions = range(keep - len(answer), keep)
            losses.append(-sum(log_probs[i, p, a] for p, a in zip(positions, answer)))
        losses = torch.stack(losses)
        with torch.no_grad():
            first = torch.stack([log_probs[i, keep - len(targets[i])] for i in range(n)]).exp()
            p_yes = first[:, self.answer_ids["Yes"][0]]
            p_no = first[:, self.answer_ids["No"][0]]
            expected = torch.tensor([q.answer == "Yes" for q in queries], device=p_yes.device)
            scores = torch.where(expected, p_yes, p_no) / (p_yes + p_no).clamp_min(1e-12)
        return TeacherScores(losses, scores.cpu(), p_yes.cpu())

    def _seconds_per_grid(self, timestamps):
        if len(timestamps) < 2:
            return float(self.spec.temporal_patch_size)
        step = (timestamps[-1] - timestamps[0]) / (len(timestamps) - 1)
        return self.spec.temporal_patch_size * step

    # ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, text: str, image: torch.Tensor | None = None, max_new_tokens: int = 256) -> str:
        """Greedy answer to a text prompt, optionally about one image [3, H, W] in [0, 1]."""
        content = ([{"type": "image"}] if image is not None else []) + [{"type": "text", "text": text}]
        prompt = self._chat_text(content)
        kwargs = {}
        if image is not None:
            pixels, grid = self.preprocess_image(image.to(self.device))
            n_tokens = int(grid.prod()) // self.spec.merge_size ** 2
            if prompt.count(self.image_token) != 1:
                raise ValueError("The checkpoint's chat template does not place exactly one image token.")
            prompt = prompt.replace(self.image_token, self.image_token * n_tokens)
            kwargs = dict(pixel_values=pixels.to(self.model.dtype), image_grid_thw=grid)
        ids = torch.tensor([self.tokenizer.encode(prompt, add_special_tokens=False)], device=self.device)
        kwargs["mm_token_type_ids"] = (ids == self.image_token_id).long() * IMAGE
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                  do_sample=False, **kwargs)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    def rewrite_instruction(self, instruction: str, first_frame: torch.Tensor | None,
                            max_new_tokens: int = 200) -> tuple[str, list[str]]:
        """VLM-as-solver baseline: the teacher rewrites the task into an explicit prompt for the video model.
        Returns (prompt, notes); an unusable reply falls back to the instruction itself."""
        if not instruction.strip():
            raise ValueError("The instruction is empty: the teacher needs the task text to rewrite.")
        reply = self.generate(build_rewrite_request(instruction), first_frame, max_new_tokens)
        prompt = clean_rewrite(reply)
        if prompt is None:
            return instruction.strip(), ["The teacher's rewrite was unusable; the instruction is used as is."]
        return prompt, []

    def propose_queries(self, instruction: str, first_frame: torch.Tensor | None,
                        max_new_tokens: int = 256) -> QueryProposal:
        """Ask the teacher for 1 goal + 1-3 process queries; falls back to instruction-derived ones."""
        if not instruction.strip():
            raise ValueError("The instruction is empty: the teacher needs the task text to write queries.")
        reply = self.generate(build_query_request(instruction), first_frame, max_new_tokens)
        return parse_query_proposal(reply, instruction)


def _repeat_encoder_output(encoded, n):
    """Reuse one video's vision features for n prompt rows (the model concatenates them per video)."""
    out = type(encoded)(**{k: v for k, v in encoded.items()})
    out.pooler_output = tuple(encoded.pooler_output) * n
    deep = getattr(encoded, "deepstack_features", None)
    if deep is not None:
        out.deepstack_features = [tuple(level) * n for level in deep]
    return out
