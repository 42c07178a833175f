"""The teacher: a Qwen-VL model that grades video frames against yes/no queries, differentiably.

Per query the loss is the teacher-forced negative log-likelihood of the expected answer ("Yes") given the
frames and the question, over the full vocabulary. Preprocessing is done in torch so gradients reach the
pixels (`vision_input`); the prompt is built with the checkpoint's own chat template.

Every query shares the prompt up to its question: the chat header and the whole video. `score` therefore
packs all queries into ONE sequence, the shared prefix once and each question after it, with an attention
mask that lets each question see the prefix and itself only, and each question's positions continuing
from the end of the prefix. That is exactly what asking each question alone computes, at the cost of one
pass over the video instead of one per query: with 4 queries about 4x less language-model work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .checkpoints import check_vlm_folder
from .queries import (Query, QueryProposal, build_query_request, build_rewrite_request, clean_rewrite,
                      parse_query_proposal, require_queries)
from .vision_input import VisionSpec, image_size, patchify, video_size

MODEL_CLASSES = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}
SUPPORTED_FAMILIES = tuple(MODEL_CLASSES)
TEXT, IMAGE, VIDEO = 0, 1, 2  # mm_token_type_ids values
CHECKPOINT_ABOVE_BYTES = 256 << 20  # recompute the teacher in backward once its activations would exceed this


@dataclass
class TeacherScores:
    losses: torch.Tensor  # [Q] NLL of each query's expected answer (differentiable)
    scores: torch.Tensor  # [Q] P(expected) / (P(Yes) + P(No)) at the answer position, detached, for display
    p_yes: torch.Tensor   # [Q] P("Yes") over the full vocabulary, detached


class VLMTeacher:
    """Wraps a Qwen3-VL / Qwen2.5-VL model and its tokenizer. Frames are [T, 3, H, W] floats in [0, 1]."""

    def __init__(self, model, tokenizer, spec: VisionSpec, max_video_pixels: int | None = None,
                 checkpointing: bool = False):
        self.model = model
        self.checkpointing = checkpointing  # recompute activations in backward when the clip makes it pay
        self.tokenizer = tokenizer
        self.spec = spec
        self.max_video_pixels = max_video_pixels
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
                        max_video_pixels: int | None = None, gradient_checkpointing: bool = True) -> "VLMTeacher":
        """Load from a local folder only (no hub access, no remote code)."""
        import transformers

        folder = Path(folder)
        model_type = check_vlm_folder(folder, SUPPORTED_FAMILIES)
        model_class = getattr(transformers, MODEL_CLASSES[model_type])
        # Local safetensors only: no hub, no pickles, no code from the folder.
        kwargs = dict(local_files_only=True, use_safetensors=True, trust_remote_code=False, dtype=dtype)
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        model = model_class.from_pretrained(folder, **kwargs).to(device).eval()
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        return cls(model, tokenizer, VisionSpec.from_folder(folder, model_type), max_video_pixels,
                   checkpointing=gradient_checkpointing)

    @property
    def max_video_pixels(self) -> int:
        return self._max_video_pixels

    @max_video_pixels.setter
    def max_video_pixels(self, budget: int | None) -> None:
        # A budget caps the checkpoint's own (None or 0: the checkpoint's own); it never makes the teacher
        # read more than it was set up for.
        self._max_video_pixels = min(budget or self.spec.video_max_pixels, self.spec.video_max_pixels)

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
        return video_size(self.spec, t, h, w, self.max_video_pixels)

    def preprocess_video(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[T, 3, H, W] in [0, 1] -> (pixel patches [N, 3*tp*p*p], grid_thw [1, 3])."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"Frames must be [T, 3, H, W]; got {tuple(frames.shape)}.")
        t, _, h, w = frames.shape
        return patchify(self.spec, frames, self.video_size(t, h, w))

    def preprocess_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[3, H, W] in [0, 1] -> (pixel patches, grid_thw); an image is one frame repeated in time."""
        return patchify(self.spec, image.unsqueeze(0), image_size(self.spec, image.shape[-2], image.shape[-1]))

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
        wrapped = self.vision_start + self.video_token + self.vision_end
        if self.spec.family == "qwen3_vl" and wrapped in text:
            # Qwen3-VL's placeholder brings its own vision markers around each frame group: it replaces the
            # template's wrapped token whole, as the checkpoint's processor does.
            return text.replace(wrapped, placeholder)
        return text.replace(self.video_token, placeholder)

    def video_prompt(self, question: str, grid_thw, timestamps: Sequence[float]) -> tuple[list[int], list[int]]:
        """Token ids and mm_token_type_ids for one question about one video, ending at the answer position."""
        ids = self.tokenizer.encode(self._video_text(question, self.video_placeholder(grid_thw, timestamps)),
                                    add_special_tokens=False)
        types = [VIDEO if i == self.video_token_id else TEXT for i in ids]
        return ids, types

    # ---------------------------------------------------------------------------------------------
    def score(self, frames: torch.Tensor, queries: Sequence[Query], timestamps: Sequence[float] | None = None,
              packed: bool = True) -> TeacherScores:
        """Grade frames [T, 3, H, W] in [0, 1] against every query.

        `timestamps` are the frames' times in seconds (default: 2 frames per second). `packed` (the default)
        asks all queries in one pass over the shared video prefix; False asks each alone (the reference).
        """
        queries = require_queries(queries)
        if timestamps is None:
            timestamps = [i / 2.0 for i in range(frames.shape[0])]
        if len(timestamps) != frames.shape[0]:
            raise ValueError(f"{len(timestamps)} timestamps for {frames.shape[0]} frames.")
        pixels, grid = self.preprocess_video(frames.to(self.device))
        rows = []  # per query: prompt ids + the answer's leading tokens, their token types, the answer ids
        for q in queries:
            ids, types = self.video_prompt(q.text, grid, timestamps)
            answer = self.answer_ids[q.answer]
            rows.append((ids + answer[:-1], types + [TEXT] * (len(answer) - 1), answer))
        if packed:
            log_probs = self._packed_answer_log_probs(rows, pixels, grid, timestamps)
        else:
            log_probs = [self._answer_log_probs(*row, pixels, grid, timestamps) for row in rows]
        losses = torch.stack([-lp.gather(1, torch.tensor(answer, device=lp.device)[:, None]).sum()
                              for lp, (_, _, answer) in zip(log_probs, rows)])
        with torch.no_grad():
            first = torch.stack([lp[0] for lp in log_probs]).exp()
            p_yes = first[:, self.answer_ids["Yes"][0]]
            p_no = first[:, self.answer_ids["No"][0]]
            expected = torch.tensor([q.answer == "Yes" for q in queries], device=p_yes.device)
            scores = torch.where(expected, p_yes, p_no) / (p_yes + p_no).clamp_min(1e-12)
        return TeacherScores(losses, scores.cpu(), p_yes.cpu())

    def _rope_positions(self, ids, types, grid, timestamps) -> torch.Tensor:
        """The model's own 3-D rotary positions [3, len] for one prompt."""
        kwargs = dict(mm_token_type_ids=torch.tensor([types], device=self.device), video_grid_thw=grid)
        if self.spec.family == "qwen2_5_vl":
            kwargs["second_per_grid_ts"] = torch.tensor([self._seconds_per_grid(timestamps)], device=self.device)
        positions, _ = self.model.model.get_rope_index(torch.tensor([ids], device=self.device), **kwargs)
        return positions[:, 0]

    def _forward_answer_logits(self, ids, types, positions, pixels, grid, attention_mask, keep) -> torch.Tensor:
        """Log-probabilities [len(keep), vocab] at the sequence positions `keep`."""
        kwargs = dict(input_ids=torch.tensor([ids], device=self.device),
                      mm_token_type_ids=torch.tensor([types], device=self.device),
                      position_ids=positions[:, None, :], attention_mask=attention_mask,
                      pixel_values_videos=pixels, video_grid_thw=grid, use_cache=False,
                      logits_to_keep=torch.tensor(keep, device=self.device))
        self._checkpoint_if_it_pays(len(ids))
        logits = self.model(**kwargs).logits[0]
        return logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)

    def _answer_log_probs(self, ids, types, answer, pixels, grid, timestamps) -> torch.Tensor:
        """One query alone: causal attention over its own prompt."""
        start = len(ids) - len(answer)
        positions = self._rope_positions(ids, types, grid, timestamps)
        return self._forward_answer_logits(ids, types, positions, pixels, grid, None,
                                           list(range(start, start + len(answer))))

    def _packed_answer_log_probs(self, rows, pixels, grid, timestamps) -> list[torch.Tensor]:
        """All queries in one sequence: the shared prefix once, then each question, each seeing the prefix
        and itself (a block mask), with the positions it would have alone."""
        shared = _common_prefix_length([ids for ids, _, _ in rows])
        shared = min(shared, min(len(ids) - len(answer) for ids, _, answer in rows))  # every question keeps a token
        full_positions = [self._rope_positions(ids, types, grid, timestamps) for ids, types, _ in rows]
        ids, types = list(rows[0][0][:shared]), list(rows[0][1][:shared])
        positions, block, keep = [full_positions[0][:, :shared]], [-1] * shared, []
        for q, ((row_ids, row_types, answer), row_positions) in enumerate(zip(rows, full_positions)):
            start = len(ids) - shared  # where this row's position `shared` lands in the packed sequence
            keep.append([start + p for p in range(len(row_ids) - len(answer), len(row_ids))])
            ids += row_ids[shared:]
            types += row_types[shared:]
            positions.append(row_positions[:, shared:])
            block += [q] * (len(row_ids) - shared)
        block = torch.tensor(block, device=self.device)
        causal = torch.ones(len(ids), len(ids), dtype=torch.bool, device=self.device).tril()
        allowed = causal & ((block[None, :] == -1) | (block[None, :] == block[:, None]))
        log_probs = self._forward_answer_logits(ids, types, torch.cat(positions, 1), pixels, grid,
                                                self._attention_mask(allowed), [p for k in keep for p in k])
        return list(log_probs.split([len(k) for k in keep]))

    def _attention_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """[1, 1, L, L] in the form the model's attention kernel takes: boolean for SDPA, additive otherwise."""
        implementation = getattr(self.model.config.get_text_config(), "_attn_implementation", "sdpa")
        if implementation == "sdpa":
            return allowed[None, None]
        if implementation != "eager":
            raise ValueError(f"Packed scoring needs 'sdpa' or 'eager' attention, not {implementation!r}; load the "
                             f"teacher with one of those.")
        dtype = self.model.dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)[None, None]

    def _checkpoint_if_it_pays(self, tokens: int) -> None:
        """HF recomputes layer activations in backward only in training mode; these models have no dropout, so
        the mode changes nothing else. Worth it only when the stored activations would be large."""
        text = self.model.config.get_text_config()
        stored = tokens * text.hidden_size * text.num_hidden_layers * 34  # ~34 bytes per token, width and layer
        self.model.train(self.checkpointing and torch.is_grad_enabled() and stored > CHECKPOINT_ABOVE_BYTES)

    def _seconds_per_grid(self, timestamps):
        if len(timestamps) < 2:
            return float(self.spec.temporal_patch_size)
        step = (timestamps[-1] - timestamps[0]) / (len(timestamps) - 1)
        return self.spec.temporal_patch_size * step

    # ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, text: str, image: torch.Tensor | None = None, max_new_tokens: int = 256) -> str:
        """Greedy answer to a text prompt, optionally about one image [3, H, W] in [0, 1]."""
        self.model.eval()  # generation keeps its cache: no recomputation
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


def _common_prefix_length(sequences: list[list[int]]) -> int:
    length = 0
    for column in zip(*sequences):
        if any(token != column[0] for token in column):
            break
        length += 1
    return length
