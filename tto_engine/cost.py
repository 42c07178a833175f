"""What each method spends, in model passes and seconds: the one cost model behind every report's `cost`.

Passes are counted, not estimated: the loop records which iterations updated the LoRA, samplers know their
steps. Classifier-free guidance (cfg != 1) runs the reasoner twice per call (conditional and unconditional).
No torch here: the benchmark runner adds these numbers up without loading a model.
"""

from __future__ import annotations

from typing import Sequence


def guidance_passes(cfg: float) -> int:
    """Reasoner passes per call: one for distilled models run at cfg 1, two with classifier-free guidance."""
    return 1 if cfg == 1.0 else 2


def sample_cost(steps: int, cfg: float) -> dict:
    """A plain sampling run: one reasoner call per step."""
    return {"reasoner_forward": steps * guidance_passes(cfg)}


def loop_cost(updated: Sequence[bool], seconds: Sequence[float], steps: int, gradient_mode: str,
              cfg: float) -> dict:
    """The test-time loop: per evaluation one decode and one batched teacher pass, and reasoner calls as the
    gradient mode needs them ("first": one, otherwise the whole sampler: `steps`); every update adds a
    backward of each role, through every step in mode "all" and through one call otherwise."""
    evaluations, updates = len(updated), sum(bool(u) for u in updated)
    calls_per_evaluation = 1 if gradient_mode == "first" else steps
    backward_per_update = steps if gradient_mode == "all" else 1
    guidance = guidance_passes(cfg)
    return {"reasoner_forward": evaluations * calls_per_evaluation * guidance,
            "reasoner_backward": updates * backward_per_update * guidance,
            "decoder_forward": evaluations, "decoder_backward": updates,
            "teacher_forward": evaluations, "teacher_backward": updates,
            "optimizer_steps": updates, "wall_s": round(sum(seconds), 3)}


def tto_cost(loop: dict, steps: int, cfg: float, final_sample_s: float) -> dict:
    """The loop plus the final sample. `equal_wall_samples` is how many plain samples fit in the same wall
    time: the N that gives Best-of-N the same budget."""
    cost = dict(loop)
    cost["reasoner_forward"] += sample_cost(steps, cfg)["reasoner_forward"]
    cost["final_sample_s"] = round(final_sample_s, 3)
    cost["wall_s"] = round(loop["wall_s"] + final_sample_s, 3)
    cost["equal_wall_samples"] = max(1, round(cost["wall_s"] / final_sample_s)) if final_sample_s > 0 else None
    return cost


def best_of_n_cost(n: int, steps: int, cfg: float, wall_s: float) -> dict:
    """N plain samples, each decoded and graded once."""
    return {"reasoner_forward": n * sample_cost(steps, cfg)["reasoner_forward"], "decoder_forward": n,
            "teacher_forward": n, "samples": n, "per_sample_s": round(wall_s / n, 3), "wall_s": round(wall_s, 3)}


def generation_cost(wall_s: float) -> dict:
    """One text generation by the teacher (writing queries, rewriting a prompt)."""
    return {"teacher_generate": 1, "wall_s": round(wall_s, 3)}


def add_costs(costs: Sequence[dict]) -> dict:
    """Sum of several reports' costs: numbers add up, anything else keeps its first value."""
    total: dict = {}
    for cost in costs:
        for key, value in cost.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = round(total.get(key, 0) + value, 6)
            else:
                total.setdefault(key, value)
    return total
