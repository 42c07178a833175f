#!/usr/bin/env bash
# Quick start 1: a real headless ComfyUI with this pack runs the tiny demo workflow and writes the video,
# the reward curve, the trained LoRA and the loop's report into ${1:-demo_output}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(bash scripts/setup_env.sh)"
export TTO_COMFYUI="$root/comfyui"
exec "$root/venv/bin/python" -m tto_runner.demo --out "${1:-demo_output}"
