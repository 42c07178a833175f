"""The toy teacher: a tiny Qwen3-VL (the pack's own tiny builder with patch 8, pixel mean 1 and 4 vision layers,
so a 6 px ball fills a patch and the white background reads as zero) trained to answer the family's three yes/no questions
from K frames, through the pack's own grading path (`VLMTeacher.score`), so it is trained on exactly what
the loop computes.

Its data are clips the loop will show it, labelled by the checker on the frames themselves: scenes drawn
exactly (ground truth and every kind of rule break), the same scenes decoded by the toy TAEHV (blur
included), the reasoner's own 4-step samples and one-step predictions, decoded, and decoded scenes where the square
moves (towards where the ball ends) or the marks fade: the loop's cheapest way to a "Yes", found in its
own videos, which the checker still fails because it judges against the first frame's square and marks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from . import latent_code as LC
from . import world
from .code_autoencoder import to_uint8, training_scene
from .optim import Progress, clipped_step

TEACHER_SEED = 300        # instance stream of the training clips
CHECK_SEED = 1000
K = 9                     # frames shown to the teacher: 0, 2, ..., 16
SOURCES = ("drawn", "decoded", "sample", "one_step", "moved")
LOOP_INDEX = 20_000       # instances of the loop's own predictions, apart from the other clips' (same stream)

QUESTIONS = {
    "goal": "Is the yellow ball inside the red square at the end of the video?",
    "obstacles": "Does the yellow ball stay clear of the black X marks the whole time?",
    "size": "Does the yellow ball keep its size the whole time?",
}
KINDS = {"goal": "goal", "obstacles": "process", "size": "process"}
REPLY_EVERY = 4           # training steps per step that also learns the JSON query reply


def rules_for(instance: world.Instance) -> list[str]:
    """The questions an instance's instruction asks about (the marks only when there are marks)."""
    return [r for r in world.RULES if r != "obstacles" or instance.obstacles]


def queries_for(instance: world.Instance):
    """The family's queries for an instance, as the pack's Query objects (expected answer: Yes)."""
    from tto_engine import Query

    return [Query(QUESTIONS[r], KINDS[r]) for r in rules_for(instance)]


def query_reply(instance: world.Instance) -> str:
    """The JSON reply TeacherAnalyze should get for an instance: the goal question and the process ones."""
    import json

    rules = rules_for(instance)
    return json.dumps({"goal": QUESTIONS["goal"], "process": [QUESTIONS[r] for r in rules if r != "goal"]})


def reply_loss(teacher, instance: world.Instance) -> torch.Tensor:
    """Teacher-forced NLL of `query_reply` (then end of turn) after the prompt TeacherAnalyze sends: the
    query request for the instruction, with the first frame as the image (as `VLMTeacher.generate` builds it)."""
    from tto_engine.queries import build_query_request
    from tto_engine.teacher import IMAGE

    image = torch.from_numpy(world.first_frame(instance)).permute(2, 0, 1).float() / 255.0
    pixels, grid = teacher.preprocess_image(image)
    prompt = teacher._chat_text([{"type": "image"}, {"type": "text", "text": build_query_request(instance.instruction)}])
    prompt = prompt.replace(teacher.image_token, teacher.image_token * (int(grid.prod()) // teacher.spec.merge_size ** 2))
    tok = teacher.tokenizer
    prompt_ids = tok.encode(prompt, add_special_tokens=False)
    reply_ids = tok.encode(query_reply(instance), add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    ids = torch.tensor([prompt_ids + reply_ids])
    logits = teacher.model(input_ids=ids, mm_token_type_ids=(ids == teacher.image_token_id).long() * IMAGE,
                           attention_mask=torch.ones_like(ids), pixel_values=pixels.to(teacher.model.dtype),
                           image_grid_thw=grid, use_cache=False).logits[0]
    start = len(prompt_ids)
    return torch.nn.functional.cross_entropy(logits[start - 1:-1].float(), ids[0, start:])


def clip_frames(video: np.ndarray) -> tuple[torch.Tensor, list[float]]:
    """uint8 [17, H, W, 3] -> the K frames the loop shows ([K, 3, H, W] in [0, 1]) and their times (s)."""
    from tto_engine.grading import frame_times, sample_frame_indices

    idx = sample_frame_indices(video.shape[0], K)
    frames = torch.from_numpy(np.ascontiguousarray(video[idx])).permute(0, 3, 1, 2).float() / 255.0
    return frames, frame_times(idx, world.FPS)


@dataclass
class Example:
    video: np.ndarray            # uint8 [17, 128, 128, 3]
    instance: world.Instance
    source: str
    verdict: world.Verdict

    def labels(self) -> dict[str, bool]:
        return {r: bool(getattr(self.verdict, r)) for r in rules_for(self.instance)}

    def yes_shares(self, softness: float) -> dict[str, float]:
        """Soft labels: P(Yes) as a sigmoid of how clearly the clip keeps each rule (`world.rule_margins`, px),
        half a pixel past the checker's line on its side of it, so a clip that barely passes or barely fails
        is an unsure one, and the answer grows surer as the ball goes deeper in or further off."""
        margins = world.rule_margins(self.video, self.instance)
        return {r: float(1 / (1 + np.exp(-(margins[r] + (0.5 if y else -0.5)) / softness)))
                for r, y in self.labels().items()}


def make_examples(seed: int, n: int, decoder=None, reasoner=None, shares=(0.2, 0.2, 0.2, 0.2, 0.2),
                  start: int = 0) -> list[Example]:
    """n clips of instances start.. of stream `seed`, each from one source drawn with `shares` (a source
    whose model is missing is skipped), labelled by the checker on the clip's own frames."""
    from . import reasoner as R

    rng = np.random.default_rng([seed, start])
    out = []
    for i in range(start, start + n):
        instance = world.generate_instance(seed, i)
        source = SOURCES[rng.choice(len(SOURCES), p=shares)]
        if (source in ("sample", "one_step") and reasoner is None) or (source != "drawn" and decoder is None):
            source = "drawn"
        if source in ("drawn", "decoded", "moved"):
            centres, radii = training_scene(rng, instance)
            code = LC.encode(instance, centres, radii)
            if source == "moved":
                code = _moved_still(rng, code, instance, centres[-1])
        else:
            code = R.sample(reasoner.model, LC.encode(instance)[:, 0], seed=int(rng.integers(1 << 30)),
                            one_step=source == "one_step")
        if source == "drawn":
            video = world.render_video(instance, centres, radii)
        else:
            with torch.no_grad():
                video = to_uint8(decoder.decode(torch.from_numpy(code)[None])[0])
        out.append(Example(video, instance, source, world.check_video(video, instance)))
    return out


def _moved_still(rng, code: np.ndarray, instance: world.Instance, ball_end) -> np.ndarray:
    """The code with the square drifting towards the ball's end (part or all of the way, gradually or at
    once), the marks fading, or both."""
    ramp = np.linspace(0, 1, LC.LATENT_FRAMES) ** rng.uniform(0.3, 2.0)
    move_target = not instance.obstacles or rng.random() < 0.6
    shift = (np.asarray(ball_end) - np.asarray(instance.target_centre)) * rng.uniform(0.3, 1.2) * move_target
    targets = np.asarray(instance.target_centre) + ramp[:, None] * shift
    fade = ramp * (bool(instance.obstacles) and (not move_target or rng.random() < 0.4))
    return LC.with_still_moved(code, targets, fade)


def loop_examples(pack, n: int, max_iterations: int = 15, learning_rate: float = 1e-3,
                  loss_threshold: float = 0.08, checker: bool = False, start: int = LOOP_INDEX,
                  log=print) -> list[Example]:
    """What the loop shows the teacher, labelled by the checker: each iteration's decoded one-step prediction
    as the LoRA moves, and the final sample, for n training instances (`pack`: probe.Pack with the teacher
    being improved). Clips that pushed a teacher towards "Yes" while the checker says no are where it is fooled.
    With `checker`, the loop runs with the checker as its teacher: the path a right teacher would lead it along."""
    from .checker_teacher import CheckerTeacher
    from .probe import recording_predictions

    out = []
    for i in range(n):
        instance = world.generate_instance(TEACHER_SEED, start + i)
        latent = pack.latent(instance)
        queries = [pack.Query(q.text, q.kind) for q in queries_for(instance)]
        teacher = CheckerTeacher(pack.teacher, instance) if checker else None
        with recording_predictions(pack) as shown:
            final, iterations, _ = pack.tto(latent, queries, i, max_iterations, learning_rate, loss_threshold,
                                            teacher=teacher)
        clips = [c for j, c in enumerate(shown) if j == 0 or not torch.equal(c, shown[j - 1])]   # recomputed decodes
        videos = [to_uint8(c.permute(1, 0, 2, 3)) for c in clips] + [pack.video(final)]
        for video in videos:
            out.append(Example(video, instance, "loop", world.check_video(video, instance)))
        log(f"loop clips: instance {i + 1}/{n}, {iterations} iterations, {len(out)} clips")
    return out


TOKEN_LABELS = ("ball", "target", "mark", "touch", "home")


def token_labels(teacher, example: Example) -> torch.Tensor:
    """[tokens, len(TOKEN_LABELS)]: for each of the teacher's merged vision tokens of the clip (time, then rows, then columns),
    whether its pixels hold ball, target, mark, ball inside a mark's box, or ball inside the square's box. The
    boxes are the first frame's, where the checker judges, even if the video moved the square or dropped a mark."""
    from tto_engine.grading import sample_frame_indices

    spec = teacher.spec
    cell, tp = spec.patch_size * spec.merge_size, spec.temporal_patch_size
    video = example.video[sample_frame_indices(example.video.shape[0], K)]
    video = np.concatenate([video, video[-1:].repeat(-len(video) % tp, 0)])   # the processor's time padding
    ball = world.ball_pixels(video)
    masks = (ball, world.square_pixels(video), video.max(-1) < 100, ball & world.obstacle_boxes(example.instance),
             ball & world.target_box(example.instance))
    t, h, w = len(video) // tp, video.shape[1] // cell, video.shape[2] // cell
    pooled = [m.reshape(t, tp, h, cell, w, cell).any(axis=(1, 3, 5)).reshape(-1) for m in masks]
    return torch.from_numpy(np.stack(pooled, 1).astype(np.float32))


def vision_tokens(teacher, example: Example) -> torch.Tensor:
    """The vision tower's merged tokens [tokens, width] for the clip the loop would show."""
    frames, _ = clip_frames(example.video)
    pixels, grid = teacher.preprocess_video(frames)
    if tuple(int(v) for v in grid[0, 1:]) != tuple(s // teacher.spec.patch_size for s in example.video.shape[1:3]):
        raise ValueError("Token labels assume the teacher reads the frames at their own size.")
    out = teacher.model.model.visual(pixels.to(teacher.model.dtype), grid_thw=grid)
    return out[0] if isinstance(out, (tuple, list)) else out.pooler_output


def pretrain_vision(teacher, examples: list[Example], steps: int, batch: int = 8, lr: float = 3e-3, seed: int = 0,
                    log=print):
    """Dense per-token supervision of the vision tower (a linear head on each merged token, thrown away
    after): what each token shows. Trained on yes/no answers alone the tower barely moves (its gradient is
    a twentieth of the output head's) and the answers ignore the frames; with this first they do not."""
    visual = list(teacher.model.model.visual.parameters())
    head = torch.nn.Linear(teacher.model.config.vision_config.out_hidden_size, len(TOKEN_LABELS))
    for p in visual:
        p.requires_grad_(True)
    labels = [token_labels(teacher, e) for e in examples]
    share = torch.cat(labels).mean(0).clamp(1e-3, 1 - 1e-3)
    opt = torch.optim.AdamW(visual + list(head.parameters()), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    progress = Progress("vision", steps, log)
    for step in range(steps):
        picks = rng.choice(len(examples), batch, replace=False)
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(
            head(vision_tokens(teacher, examples[i])).float(), labels[i], pos_weight=(1 - share) / share)
            for i in picks) / batch
        clipped_step(opt, loss, visual + list(head.parameters()), max_norm=None)
        progress(step, loss)
    for p in visual:
        p.requires_grad_(False)
    return teacher


def load(folder, dtype=torch.float32):
    from tto_engine import VLMTeacher

    return VLMTeacher.from_pretrained(folder, dtype=dtype, gradient_checkpointing=False)


def save(teacher, folder, origin) -> None:
    """Write the teacher's weights and tokenizer to `folder`, and the other files of the folder it was loaded
    from (`origin`): the processor's settings (patch size, pixel budget) live there, not in the model."""
    import shutil
    from pathlib import Path

    folder, origin = Path(folder), Path(origin)
    teacher.model.save_pretrained(folder)
    teacher.tokenizer.save_pretrained(folder)
    if origin.resolve() != folder.resolve():
        for f in origin.iterdir():
            if f.is_file() and not (folder / f.name).exists():
                shutil.copy2(f, folder / f.name)


def build(folder, seed: int = 0, vision_width: int | None = None, text_layers: int | None = None):
    from tto_models.qwen import build_tiny_qwen3vl

    build_tiny_qwen3vl(folder, seed=seed, patch_size=8, image_mean=1.0, video_max_pixels=32 * 32 * 256,
                       vision_depth=4, vision_width=vision_width, text_layers=text_layers)
    return load(folder)


def _label_weights(examples: list[Example]) -> dict[tuple[str, bool], float]:
    """Class balance: each (question, answer) pair weighs as much in total as any other."""
    counts = Counter((r, y) for e in examples for r, y in e.labels().items())
    return {key: len(counts) and sum(counts.values()) / (len(counts) * c) for key, c in counts.items()}


def example_loss(teacher, example: Example, weights=None, softness: float = 0.0) -> torch.Tensor:
    """Weighted NLL of the checker's answers; with `softness` (px) > 0, cross-entropy against the soft labels
    of `Example.yes_shares` (both answers asked in the same pass)."""
    from tto_engine import Query

    frames, times = clip_frames(example.video)
    labels = example.labels()
    w = torch.tensor([1.0 if weights is None else weights[(r, y)] for r, y in labels.items()])
    if softness > 0:
        yes = torch.tensor(list(example.yes_shares(softness).values()), dtype=torch.float32)
        queries = [Query(QUESTIONS[r], KINDS[r], answer=a) for a in ("Yes", "No") for r in labels]
        nll_yes, nll_no = teacher.score(frames, queries, times).losses.view(2, -1)
        losses = yes * nll_yes + (1 - yes) * nll_no
    else:
        queries = [Query(QUESTIONS[r], KINDS[r], answer="Yes" if y else "No") for r, y in labels.items()]
        losses = teacher.score(frames, queries, times).losses
    return (w * losses).sum() / w.sum()


def train(teacher, examples: list[Example], steps: int, batch: int = 8, lr: float = 1e-3, seed: int = 0,
          softness: float = 0.0, log=print):
    model = teacher.model
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    weights = _label_weights(examples)
    rng = np.random.default_rng(seed)
    progress = Progress("teacher", steps, log, every=25)
    for step in range(steps):
        warm = min(1.0, (step + 1) / max(1, steps // 20))
        for g in opt.param_groups:
            g["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        picks = rng.choice(len(examples), batch, replace=False)
        loss = sum(example_loss(teacher, examples[i], weights, softness) for i in picks) / batch
        if step % REPLY_EVERY == 0:      # the query reply: two fixed texts, learnt on the side
            loss = loss + reply_loss(teacher, examples[picks[0]].instance)
        clipped_step(opt, loss, params)
        progress(step, loss)
    for p in params:
        p.requires_grad_(False)
    model.eval()
    return teacher


@torch.no_grad()
def evaluate(teacher, examples: list[Example]) -> dict:
    """Accuracy of P(Yes) > P(No) against the checker's labels, per source and question, with the share of
    "yes" labels (the accuracy of always answering the majority is max(share, 1 - share))."""
    from tto_engine import Query

    table: dict = {}
    for e in examples:
        frames, times = clip_frames(e.video)
        labels = e.labels()
        scores = teacher.score(frames, [Query(QUESTIONS[r], KINDS[r]) for r in labels], times).scores
        for (r, y), s in zip(labels.items(), scores):
            for key in (e.source, "all"):
                cell = table.setdefault(key, {}).setdefault(r, {"n": 0, "right": 0, "yes": 0})
                cell["n"] += 1
                cell["right"] += int((float(s) > 0.5) == y)
                cell["yes"] += int(y)
    return {src: {r: {"n": c["n"], "accuracy": round(c["right"] / c["n"], 3), "yes_share": round(c["yes"] / c["n"], 3)}
                  for r, c in rules.items()} for src, rules in table.items()}
