"""The test-time loop at the paper's real shapes: memory and FLOPs per memory preset, on CPU.

    python benchmarks/real_shapes.py --json OUT [--presets first_release,default,24gb]  # counts, CPU
    python benchmarks/real_shapes.py --device cuda --json OUT                # measured on a CUDA GPU

Run with the environment's python and the ComfyUI host named by $TTO_COMFYUI
(`root="$(bash scripts/setup_env.sh)"; TTO_COMFYUI=$root/comfyui $root/venv/bin/python ...`).

Shapes: 89x480x832 video (latent 23x30x52, 8,970 Wan tokens), K = 24 graded frames, 4 queries, LoRA rank
16 on attention + FFN, the host's WanModel with Wan 2.2 TI2V-5B's sizes, a TAEHV loop decoder and
Qwen3-VL-4B-Instruct's published config (benchmarks/configs/). One loop iteration (forward + backward +
AdamW step, measured after a warm-up iteration) and one plain 4-step sample run the pack's own code
(benchmarks/loop_harness.py says which functions).

--device fake (default): no weight or activation memory is allocated. Peak memory is counted from the
tensor storages alive (activations saved for the backward included) and FLOPs with FlopCounterMode's
formulas: counts, not measurements. --device cuda: random weights at the same shapes on the GPU; peak
from torch.cuda.max_memory_allocated, seconds per iteration and per sample (warm).
The presets are TTOLoop's memory presets (tto_engine.presets) at VLMTeacherLoader's default pixel budget,
at the checkpoint's own (`@full`) and at a smaller one, plus the first release's loop
(benchmarks/memory_presets.py). Each runs in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.loop_harness import Scale  # noqa: E402
from benchmarks.memory_presets import PRESETS  # noqa: E402

# Issue 9's targets at the real shapes: peak GiB, and iteration FLOPs over a plain 4-step sample's.
TARGETS = {"default": {"peak_gib": 60.0, "iteration_over_sample": 1.0},
           "24gb": {"peak_gib": 22.0, "iteration_over_sample": 1.3}}
PAPER_ITERATIONS = 16  # the paper's mean iterations per sample: its 69 s per sample covers these and the final run


def _child(preset_name: str, device: str) -> None:
    from benchmarks.loop_harness import measure
    from benchmarks.real_models import World

    import torch

    try:
        result = measure(World(device), PRESETS[preset_name].settings())
    except torch.cuda.OutOfMemoryError:  # a measurement too: the preset does not fit this GPU
        total = torch.cuda.get_device_properties(0).total_memory
        result = {"device": device, "gpu": torch.cuda.get_device_name(), "out_of_memory": True,
                  "peak_gib": torch.cuda.max_memory_allocated() / 1024 ** 3, "gpu_total_gib": total / 1024 ** 3}
    print("RESULT " + json.dumps(result))


def _run_one(preset_name: str, device: str, log) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", preset_name, "--device", device]
    tick = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{preset_name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    log(f"[real_shapes] {preset_name}: {time.time() - tick:.0f} s")
    return json.loads(lines[-1][len("RESULT "):])


def run(names: list[str], device: str, log=print) -> dict:
    results = {}
    for name in names:
        preset = PRESETS[name]
        results[name] = {"description": preset.description, "settings": preset.as_dict(),
                         **_run_one(name, device, log)}
        target = TARGETS.get(name)  # the node presets at the loader's default budget
        if target is not None and device == "fake":
            results[name]["targets"] = {k: {"target": v, "met": results[name][k] <= v} for k, v in target.items()}
    return results


def _teacher_frames(r: dict) -> str:
    return f"{r['teacher_frame_size'][0]}x{r['teacher_frame_size'][1]}, {r['teacher_video_tokens']:,} tok"


def table(presets: dict, device: str) -> str:
    if device == "cuda":
        rows = ["| preset | teacher frames | peak GiB (measured) | iteration s | 4-step sample s | iteration / sample "
                "| 16 iterations + sample s |", "|---|---|---|---|---|---|---|"]
        for n, r in presets.items():
            if r.get("out_of_memory"):
                rows.append(f"| {n} | {_teacher_frames(r)} | out of memory (> {r['peak_gib']:.1f} of "
                            f"{r['gpu_total_gib']:.0f}) | - | - | - | - |")
            else:
                rows.append(f"| {n} | {_teacher_frames(r)} | {r['peak_gib']:.1f} | {r['iteration_s']:.2f} | "
                            f"{r['sample_s']:.2f} | {r['iteration_over_sample_s']:.2f} | "
                            f"{PAPER_ITERATIONS * r['iteration_s'] + r['sample_s']:.1f} |")
        return "\n".join(rows)
    rows = ["| preset | Wan weights | teacher frames | peak GiB | weights GiB | iteration FLOP | 4-step sample FLOP "
            "| iteration / sample | peak during |", "|---|---|---|---|---|---|---|---|---|"]
    for n, r in presets.items():
        rows.append(f"| {n} | {r['settings']['weight_dtype']} | {_teacher_frames(r)} | {r['peak_gib']:.1f} | "
                    f"{sum(r['weights_gib'].values()):.2f} | {r['iteration_flops']:.3g} | {r['sample_flops']:.3g} | "
                    f"{r['iteration_over_sample']:.2f} | {r['peak_phase']} |")
    return "\n".join(rows)


def _scale() -> dict:
    scale = dataclasses.asdict(Scale())
    scale["teacher_folder"] = os.path.relpath(scale["teacher_folder"], ROOT)
    return scale


def _environment() -> dict:
    import platform

    import torch
    import transformers

    path = os.path.join(os.environ.get("TTO_COMFYUI", ""), "comfyui_version.py")
    found = re.search(r'__version__ = "([^"]+)"', open(path).read()) if os.path.isfile(path) else None
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "comfyui": found.group(1) if found else "unknown", "python": platform.python_version(),
            "machine": platform.machine()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=False, help="write the results here")
    parser.add_argument("--device", choices=("fake", "cuda"), default="fake")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.device)
        return
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda needs a CUDA GPU and a CUDA build of torch.")
    presets = run(names, args.device)
    print(table(presets, args.device))
    if args.json:
        kind = ("counts on fake tensors (CPU), not GPU measurements" if args.device == "fake"
                else "measured on a CUDA GPU with random weights")
        with open(args.json, "w") as f:
            command = ["python", "benchmarks/real_shapes.py", "--device", args.device, "--presets", ",".join(names),
                       "--json", "OUT"]
            json.dump({"command": " ".join(command), "kind": kind,
                       "environment": _environment(), "scale": _scale(),
                       "targets": TARGETS, "presets": presets}, f, indent=2)


if __name__ == "__main__":
    main()
