"""The real-shape benchmark's accounting, checked where it can be measured: tiny models on CPU.

The benchmark counts memory and FLOPs on fake tensors at sizes no CPU could run. Here the same harness
(the node's loop code path on tiny models) runs on real tensors under the CPU allocator's profiler, with
the `24gb` preset (reasoner blocks recomputed in the backward) and the teacher recomputing its layers too
(its size threshold lowered to zero, since tiny activations never reach it):
- the counted peak, and its rise during the measured iteration, match what the allocator saw;
- the fake-tensor run counts exactly what the real run counts;
- the FLOPs of a plain 4-step sample equal an analytic count of the Wan forward, and FlopCounterMode's;
- each preset reaches the switches it names: fake runs of `default` and `first_release` differ from
  `24gb` where, and only where, their settings differ.

The runs happen in one fresh process: ComfyUI fixes its attention implementation when it is first
imported, and the benchmark needs SDPA (what it uses on CUDA cards), whatever other tests imported.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.accounting import GIB  # noqa: E402
from benchmarks.loop_harness import LoopSettings, Scale  # noqa: E402
from benchmarks.memory_presets import FIRST_RELEASE, FULL_BUDGET, PRESETS, TEACHER_BUDGETS, row_name  # noqa: E402
from tto_engine.presets import PRESETS as NODE_PRESETS, TEACHER_VIDEO_PIXELS  # noqa: E402
from benchmarks.real_models import TeacherSettings  # noqa: E402

WAN = dict(dim=128, ffn_dim=256, layers=2)
TINY = Scale(frames=5, height=32, width=32, k=4, queries=2, context_tokens=16, wan=WAN, lora_rank=4,
             teacher_overrides={
                 "text": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=32, vocab_size=2000,
                              rope_scaling={"rope_type": "default", "mrope_section": [6, 5, 5],
                                            "mrope_interleaved": True}),
                 "vision": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                                deepstack_visual_indexes=[0])})
# fp32 everywhere: CPU kernels for it are fast, and nothing here depends on the dtype.
FP32 = LoopSettings(memory="24gb", weight_dtype="fp32", compute_dtype="fp32", decoder_dtype="fp32",
                    teacher=TeacherSettings(checkpointing=True, dtype="fp32"))


def _allocator_window(prof) -> tuple[int, int]:
    """From the profiler's raw CPU allocator events: bytes allocated when the measured iteration started
    and the most allocated at once during it (both counted from the start of the profile)."""
    events = sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns())
    marks = [e.start_ns() for e in events if e.name().startswith("measured iteration: mark")]
    assert len(marks) == 2, "the harness marks the start and end of the measured iteration"
    used, start, peak = 0, None, 0
    for e in events:
        if e.name() != "[memory]":
            continue
        if start is None and e.start_ns() >= marks[0]:
            start = peak = used
        used += e.nbytes()
        if start is not None and e.start_ns() <= marks[1]:
            peak = max(peak, used)
    return start, peak


def _run_all() -> dict:
    """The child process: a real CPU run under the profiler, a fake run, a sample under FlopCounterMode."""
    import torch

    from benchmarks.accounting import Ledger, flop_counter_mode, flop_formulas
    from benchmarks.loop_harness import measure
    from benchmarks.real_models import World, build_wan, import_host

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    pack = import_host(World("fake"))
    pack.tto_engine.teacher.CHECKPOINT_ABOVE_BYTES = 0  # tiny activations: recompute them anyway
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        real = measure(World("cpu"), FP32, TINY)
    out = {"real": real, "allocator": _allocator_window(prof), "fake": measure(World("fake"), FP32, TINY)}
    for name, memory in (("default", "default"), ("first_release", None)):
        out[f"fake {name}"] = measure(World("fake"), dataclasses.replace(FP32, memory=memory), TINY)

    world = World("fake")
    world.ledger = ledger = Ledger(flop_registry=flop_formulas())
    cond = torch.randn(1, TINY.context_tokens, 4096)
    mask = torch.ones(1, 1, *TINY.latent_shape[2:])
    mask[:, :, 0] = 0
    with ledger:
        model = build_wan(pack, world, WAN, "bf16")
        before = dict(ledger.flops)
        with flop_counter_mode() as counter, torch.inference_mode():
            pack.nodes.comfy_reasoner.stock_ksampler(model, 0, TINY.steps, 1.0, "euler", "simple", [[cond, {}]],
                                                     [[cond, {}]], {"samples": torch.zeros(TINY.latent_shape),
                                                                    "noise_mask": mask})
    out["flop_counter_sample"] = counter.get_total_flops()
    out["ledger_sample"] = sum(ledger.flops.values()) - sum(before.values())
    return out


@pytest.fixture(scope="module")
def runs():
    root = os.environ.get("TTO_COMFYUI")
    if not root or not (Path(root) / "comfy").is_dir():
        pytest.skip("no ComfyUI host: run through scripts/test.sh (it sets TTO_COMFYUI)")
    proc = subprocess.run([sys.executable, __file__], cwd=REPO, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RUNS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RUNS "):])


def test_counted_peak_matches_the_allocator(runs):
    result, (alloc_start, alloc_peak) = runs["real"], runs["allocator"]
    counted_peak, counted_start = result["peak_gib"] * GIB, result["start_gib"] * GIB
    # The whole live set at the peak (weights, LoRA state, saved activations, other live tensors) ...
    assert counted_peak == pytest.approx(alloc_peak, rel=0.02)
    # ... and what the iteration added on top of what was live when it started.
    assert counted_peak - counted_start == pytest.approx(alloc_peak - alloc_start, rel=0.05)
    assert result["breakdown_gib"]["reasoner/saved"] > 0


def test_fake_tensors_count_what_real_tensors_count(runs):
    real, fake = runs["real"], runs["fake"]
    for key in ("iteration_flops", "sample_flops", "iteration_flops_by_role", "weights_gib", "teacher_video_tokens"):
        assert fake[key] == real[key], key
    kib = 1024 / GIB  # a few scalar tensors (optimizer step counters) may differ
    assert fake["peak_gib"] == pytest.approx(real["peak_gib"], abs=kib)
    assert fake["start_gib"] == pytest.approx(real["start_gib"], abs=kib)
    assert fake["breakdown_gib"] == pytest.approx(real["breakdown_gib"], abs=kib)
    assert fake["peak_by_phase_gib"] == pytest.approx(real["peak_by_phase_gib"], abs=kib)
    assert fake["most_saved_gib"] == pytest.approx(real["most_saved_gib"], abs=kib)


def _wan_forward_flops(scale: Scale) -> int:
    """Matmul and convolution FLOPs of one WanModel forward (2 per multiply-add; biases not counted)."""
    _, c, t, h, w = scale.latent_shape
    d, f, layers, lc = scale.wan["dim"], scale.wan["ffn_dim"], scale.wan["layers"], scale.context_tokens
    tokens = t * (h // 2) * (w // 2)
    patch = 2 * tokens * d * (c * 2 * 2)                         # 1x2x2 patch embedding; the head is the same size
    text = 2 * lc * (4096 * d + d * d)
    time = 2 * t * (256 * d + d * d + d * 6 * d)                 # one timestep per latent frame (image-to-video)
    block = (2 * tokens * d * d * 4 + 4 * tokens * tokens * d    # self-attention: q, k, v, o and attention
             + 2 * tokens * d * d * 2 + 2 * lc * d * d * 2        # cross-attention: q, o on video; k, v on text
             + 4 * tokens * lc * d                                # cross-attention itself
             + 2 * 2 * tokens * d * f)                            # FFN
    return 2 * patch + text + time + layers * block


def test_sample_flops_match_the_analytic_count_and_flop_counter_mode(runs):
    expected = TINY.steps * _wan_forward_flops(TINY)
    assert runs["real"]["sample_flops"] == expected
    assert runs["flop_counter_sample"] == runs["ledger_sample"] == expected


def test_presets_change_only_what_they_name(runs):
    runs = {"24gb": runs["fake"], "default": runs["fake default"], "first_release": runs["fake first_release"]}
    saved = {name: r["most_saved_gib"] for name, r in runs.items()}
    flops = {name: r["iteration_flops_by_role"] for name, r in runs.items()}
    # 24gb recomputes the reasoner: it keeps less for the backward and spends more FLOPs on it, nothing else.
    assert saved["24gb"]["reasoner"] < saved["default"]["reasoner"]
    assert flops["24gb"]["reasoner"] > flops["default"]["reasoner"]
    assert {k: v for k, v in flops["24gb"].items() if k != "reasoner"} == \
        {k: v for k, v in flops["default"].items() if k != "reasoner"}
    # The first release keeps the decoder's activations (every frame's) and asks each query alone.
    assert saved["first_release"]["decoder"] > saved["default"].get("decoder", 0.0)
    assert flops["first_release"]["teacher"] > flops["default"]["teacher"]
    assert flops["first_release"]["reasoner"] == flops["default"]["reasoner"]
    # Recomputed in its own backward pass, the decoder's work stays the decoder's.
    assert set(flops["default"]) == set(flops["first_release"]) == {"reasoner", "decoder", "teacher"}


def test_the_preset_table_is_the_nodes():
    assert set(PRESETS) == {FIRST_RELEASE} | {row_name(name, pixels, TEACHER_VIDEO_PIXELS)
                                              for pixels in TEACHER_BUDGETS for name in NODE_PRESETS}
    assert {"default", "24gb", "default@full", "24gb@full", "first_release"} <= set(PRESETS)
    # The plain rows are what a user gets: the loader's default budget; the first release read full frames.
    assert PRESETS["default"].teacher_pixels == PRESETS["24gb"].teacher_pixels == TEACHER_VIDEO_PIXELS
    assert PRESETS["first_release"].teacher_pixels == PRESETS["default@full"].teacher_pixels == FULL_BUDGET
    for name, preset in PRESETS.items():
        settings = preset.settings()
        assert settings.memory is None or settings.memory in NODE_PRESETS, name
    assert PRESETS["24gb"].settings().memory == "24gb" and PRESETS["24gb"].weight_dtype == "fp8_e4m3fn"
    assert PRESETS["default"].settings().memory == "default" and PRESETS["default"].weight_dtype == "bf16"
    assert PRESETS["first_release"].settings().memory is None


if __name__ == "__main__":
    print("RUNS " + json.dumps(_run_all()))
