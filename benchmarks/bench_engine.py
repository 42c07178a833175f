"""Per-iteration cost of the test-time loop on CPU with tiny models, split by role, against plain sampling.

    python benchmarks/bench_engine.py [--iterations 6] [--out benchmarks/engine_results.json]

For each size (in a fresh subprocess, so peak memory is per size) it runs the loop with the diffusers
Wan backend, the linear RGB surrogate and the tiny Qwen3-VL teacher, and reports mean seconds per
iteration for reasoner forward+backward, decode forward+backward, teacher forward+backward and the
optimizer step (warm-up iteration excluded), the peak resident memory, and the ratio of one loop
iteration to one plain 4-step sample measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# name: (transformer overrides, latent [T, H, W], K)
SIZES = {
    "xs": (dict(num_attention_heads=2, attention_head_dim=32, num_layers=2, ffn_dim=128), (3, 4, 4), 8),
    "s": (dict(num_attention_heads=4, attention_head_dim=64, num_layers=4, ffn_dim=1024), (6, 8, 8), 12),
    "m": (dict(num_attention_heads=8, attention_head_dim=64, num_layers=6, ffn_dim=2048), (6, 12, 20), 24),
}


def measure(size: str, iterations: int, teacher_dir: str) -> dict:
    import torch

    from tto_engine import (LinearRGBDecoder, LoRAAdapter, LoRASpec, Query, TTOConfig, VLMTeacher, draw_noise,
                            run_tto, sample)
    from tto_engine.diffusers_wan import DiffusersWanReasoner
    from tto_models.wan import TINY_DIFFUSERS_TEXT_DIM, build_tiny_diffusers_wan

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    overrides, (t, h, w), k = SIZES[size]
    model = build_tiny_diffusers_wan(seed=0, **overrides)
    params = sum(p.numel() for p in model.parameters())
    embeds = torch.randn(1, 16, TINY_DIFFUSERS_TEXT_DIM, generator=torch.Generator().manual_seed(1))
    reasoner = DiffusersWanReasoner(model, embeds)
    teacher = VLMTeacher.from_pretrained(teacher_dir, dtype=torch.float32)
    decoder = LinearRGBDecoder(torch.randn(48, 3, generator=torch.Generator().manual_seed(2)) * 0.2,
                               spatial_scale=16)
    queries = [Query("By the end of the video, does the yellow ball reach the red square?"),
               Query("Does the yellow ball avoid every X?", "process"),
               Query("Does the yellow ball stay intact?", "process")]
    noise = draw_noise((1, 48, t, h, w), seed=0)
    clean = torch.zeros_like(noise)
    mask = torch.ones(1, 1, t, 1, 1)
    mask[:, :, 0] = 0

    sample(reasoner, noise, clean, mask, steps=4)  # warm-up
    tick = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        sample(reasoner, noise, clean, mask, steps=4)
    plain = (time.perf_counter() - tick) / repeats

    lora = LoRAAdapter(model, LoRASpec(rank=16, alpha=16, target_modules=reasoner.lora_targets))
    config = TTOConfig(max_iterations=iterations, learning_rate=5e-5, loss_threshold=0.0, frames=k, steps=4)
    result = run_tto(reasoner, decoder, teacher, queries, lora, noise, clean, mask, config)
    timed = result.history[1:-1] or result.history  # no warm-up; the last iteration takes no backward
    roles = {role: statistics.mean(r.timings.get(role, 0.0) for r in timed)
             for role in ("reasoner", "decode", "teacher", "optimizer")}
    per_iteration = statistics.mean(r.seconds for r in timed)
    video_frames = 4 * (t - 1) + 1
    return {
        "size": size, "reasoner_params": params, "lora_params": lora.num_parameters(),
        "latent": [48, t, h, w], "video": [video_frames, 16 * h, 16 * w], "teacher_frames_K": min(k, t),
        "iteration_s": per_iteration, "roles_s": roles, "plain_4step_sample_s": plain,
        "iteration_over_plain_sample": per_iteration / plain,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "iterations_timed": len(timed),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "engine_results.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--teacher-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # child process: one size
        print(json.dumps(measure(args.one, args.iterations, args.teacher_dir)))
        return

    from tto_models.qwen import build_tiny_qwen3vl

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = str(build_tiny_qwen3vl(os.path.join(tmp, "teacher"), seed=0))
        for size in args.sizes.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", size, "--iterations", str(args.iterations),
                                  "--teacher-dir", teacher_dir], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} threads, torch threads = cores")
    print("| size | reasoner params | LoRA params | video (F,H,W) | K | iteration s | reasoner | decode | teacher "
          "| optimizer | plain 4-step sample s | iteration / sample | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        roles = r["roles_s"]
        print(f"| {r['size']} | {r['reasoner_params'] / 1e6:.2f} M | {r['lora_params'] / 1e3:.0f} k | "
              f"{tuple(r['video'])} | {r['teacher_frames_K']} | {r['iteration_s']:.3f} | {roles['reasoner']:.3f} | "
              f"{roles['decode']:.4f} | {roles['teacher']:.3f} | {roles['optimizer']:.4f} | "
              f"{r['plain_4step_sample_s']:.3f} | {r['iteration_over_plain_sample']:.2f} | {r['peak_rss_mb']:.0f} |")
    with open(args.out, "w") as f:
        json.dump({"command": "python benchmarks/bench_engine.py", "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
