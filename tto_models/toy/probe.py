"""Run the pack's own nodes on toy instances in this process (no server): the stock sampler for the baseline,
LoRAAttach + TTOLoop for the loop, the toy TAEHV as decoder, the checker on the decoded videos.

This is for tuning the toy world quickly; the results that count go through a real server (tto-bench).
"""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import torch

from . import reasoner as R
from . import teacher as T
from . import world


class Pack:
    """The models loaded once, as the host's loaders and the pack's teacher loader would load them."""

    def __init__(self, reasoner_file, taehv_file, teacher_dir=None):
        """`teacher_dir`: the trained teacher, for the loop (None: sampling and decoding only)."""
        comfy = R.host()
        from tto_runner.paths import import_as_pack

        name = import_as_pack("vlm_teacher_pack").__name__
        import importlib

        self.nodes = importlib.import_module(f"{name}.nodes.tto_nodes")
        self.reasoner_nodes = importlib.import_module(f"{name}.nodes.comfy_reasoner")
        self.latent_nodes = importlib.import_module(f"{name}.nodes.latent_nodes")
        engine = importlib.import_module(f"{name}.tto_engine")
        memory = importlib.import_module(f"{name}.nodes.teacher_memory")
        self.Query = engine.Query
        self.model = R.load(reasoner_file)
        self.vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(taehv_file)))
        self.teacher = None
        if teacher_dir is not None:
            self.teacher = engine.VLMTeacher.from_pretrained(teacher_dir, dtype=torch.float32,
                                                             gradient_checkpointing=False)
            memory.manage(self.teacher)
        cond = R.prompt_embedding()
        self.positive = [[cond, {}]]
        self.negative = [[cond, {}]]

    def latent(self, instance: world.Instance) -> dict:
        """The LATENT the pack's TAEHV image-to-video node builds from the instance's first frame (as LoadImage
        reads first_frame.png): the toy TAEHV's encoder writes latent frame 0."""
        image = torch.from_numpy(world.first_frame(instance)[None]).float() / 255.0
        return self.latent_nodes.image_to_video_latent(self.vae, image, world.SIZE, world.SIZE, world.FRAMES)

    def video(self, latent: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            frames = self.vae.decode(latent)[0]
        return (frames.clamp(0, 1) * 255).round().byte().numpy()

    def baseline(self, latent: dict, seed: int) -> torch.Tensor:
        return self.reasoner_nodes.stock_ksampler(self.model, seed, R.SAMPLE_STEPS, 1.0, "euler", "simple",
                                                  self.positive, self.negative, latent)["samples"]

    def tto(self, latent: dict, queries, seed: int, max_iterations: int, learning_rate: float,
            loss_threshold: float, rank: int = 16, gradient_mode: str = "first",
            teacher=None) -> tuple[torch.Tensor, int, dict]:
        """`teacher`: grade with this one instead of the loaded teacher (the checker teacher)."""
        marked = self.nodes.LoRAAttach.PREPARE_CLASS_CLONE({}).execute(self.model, rank, float(rank),
                                                                         "attention+ffn", 0).result[0]
        loop = self.nodes.TTOLoop.PREPARE_CLASS_CLONE({})
        out = loop.execute(marked, self.positive, self.negative, latent, teacher or self.teacher, queries, seed,
                           R.SAMPLE_STEPS, 1.0, "euler", "simple", max_iterations, learning_rate, loss_threshold,
                           T.K, 0.5, gradient_mode, float(world.FPS), self.vae, "default").result
        return out[1]["samples"], int(out[5]), json.loads(out[4])


class _Recording:
    """A loop decoder that also keeps every prediction it is shown, decoded whole (all frames, no gradient)."""

    def __init__(self, inner, store: list):
        self.inner, self.store = inner, store

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, latent, indices=None):
        with torch.no_grad():
            self.store.append(self.inner(latent.detach(), None).detach().clone())
        return self.inner(latent, indices)


@contextlib.contextmanager
def recording_predictions(pack: Pack):
    """Within the block, the TTOLoop node's loop decoder records each iteration's decoded prediction
    ([frames, 3, H, W] in [0, 1]) in the yielded list: the clips the teacher is shown mid-optimisation."""
    store: list = []
    original = pack.nodes.surrogate_decoder
    pack.nodes.surrogate_decoder = lambda vae, model: _Recording(original(vae, model), store)
    try:
        yield store
    finally:
        pack.nodes.surrogate_decoder = original


def run(pack: Pack, instances, seed: int = 0, max_iterations: int = 10, learning_rate: float = 1e-3,
        loss_threshold: float = 0.22, gradient_mode: str = "first", checker: bool = False, log=print) -> list[dict]:
    """Baseline and loop verdicts per instance; `checker`: the loop's teacher is the checker itself."""
    from .checker_teacher import CheckerTeacher

    rows = []
    for instance in instances:
        latent = pack.latent(instance)
        queries = [pack.Query(q.text, q.kind) for q in T.queries_for(instance)]
        base = world.check_video(pack.video(pack.baseline(latent, seed)), instance)
        tick = time.time()
        final, iterations, report = pack.tto(latent, queries, seed, max_iterations, learning_rate, loss_threshold,
                                             gradient_mode=gradient_mode,
                                             teacher=CheckerTeacher(pack.teacher, instance) if checker else None)
        adapted = world.check_video(pack.video(final), instance)
        rules = T.rules_for(instance)
        row = {"index": instance.index, "baseline": base.failed_rules(), "tto": adapted.failed_rules(),
               "iterations": iterations, "stop": report["stop_reason"],
               "first_scores": {r: q["first_score"] for r, q in zip(rules, report["queries"])},
               "final_scores": {r: q["final_score"] for r, q in zip(rules, report["queries"])},
               "seconds": round(time.time() - tick, 1)}
        log(row)
        rows.append(row)
    return rows


def best_of_checker(pack: Pack, instances, candidates: int, log=print) -> list[dict]:
    """Best-of-N with the checker as the selector: per instance, how many of `candidates` stock samples
    (seeds 0..N-1) the checker passes. Best-of-N with a right teacher succeeds iff one does: what more
    sampling could give at best, beside `run(..., checker=True)` for the loop."""
    rows = []
    for instance in instances:
        latent = pack.latent(instance)
        tick = time.time()
        passing = sum(world.check_video(pack.video(pack.baseline(latent, seed)), instance).success
                      for seed in range(candidates))
        row = {"index": instance.index, "passing": int(passing), "candidates": candidates,
               "seconds": round(time.time() - tick, 1)}
        log(row)
        rows.append(row)
    return rows
