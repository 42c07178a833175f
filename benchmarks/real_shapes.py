"""The test-time loop at the paper's real shapes: memory and FLOPs per memory preset, on CPU.

    python benchmarks/real_shapes.py --json OUT [--presets default,24gb]     # counts, fake tensors, CPU
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
Each distinct setting runs in a fresh subprocess; presets whose applicable settings coincide share a run.
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
from benchmarks.memory_presets import PRESETS, SWITCHES, loop_settings, pending  # noqa: E402


def _child(preset_name: str, device: str) -> None:
    from benchmarks.loop_harness import measure
    from benchmarks.real_models import World

    import torch

    try:
        result = measure(World(device), loop_settings(PRESETS[preset_name]))
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
    results, by_settings = {}, {}
    for name in names:
        preset = PRESETS[name]
        key = loop_settings(preset)
        if key not in by_settings:
            by_settings[key] = _run_one(name, device, log)
        results[name] = {"description": preset.description, "settings": preset.settings(),
                         "pending": pending(preset), "complete": not pending(preset), **by_settings[key]}
    return results


def table(presets: dict, device: str) -> str:
    if device == "cuda":
        rows = ["| preset | complete | peak GiB (measured) | iteration s | 4-step sample s | iteration / sample |",
                "|---|---|---|---|---|---|"]
        for n, r in presets.items():
            done = "yes" if r["complete"] else "no"
            if r.get("out_of_memory"):
                rows.append(f"| {n} | {done} | out of memory (> {r['peak_gib']:.1f} of {r['gpu_total_gib']:.0f}) "
                            f"| - | - | - |")
            else:
                rows.append(f"| {n} | {done} | {r['peak_gib']:.1f} | {r['iteration_s']:.2f} | {r['sample_s']:.2f} | "
                            f"{r['iteration_over_sample_s']:.2f} |")
        return "\n".join(rows)
    rows = ["| preset | complete (pending switches) | peak GiB | weights GiB | iteration FLOP | 4-step sample FLOP "
            "| iteration / sample | peak during |", "|---|---|---|---|---|---|---|---|"]
    for n, r in presets.items():
        state = "yes" if r["complete"] else "no: " + ", ".join(r["pending"])
        rows.append(f"| {n} | {state} | {r['peak_gib']:.1f} | {sum(r['weights_gib'].values()):.2f} | "
                    f"{r['iteration_flops']:.3g} | {r['sample_flops']:.3g} | {r['iteration_over_sample']:.2f} | "
                    f"{r['peak_phase']} |")
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
            json.dump({"command": "python benchmarks/real_shapes.py " + " ".join(sys.argv[1:]), "kind": kind,
                       "environment": _environment(), "scale": _scale(),
                       "switches": {k: v or "pending (not in the code yet)" for k, v in SWITCHES.items()},
                       "presets": presets}, f, indent=2)


if __name__ == "__main__":
    main()
