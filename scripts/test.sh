#!/usr/bin/env bash
# Quick start 2: the test suite (engine, tiny models, a real ComfyUI server, the real frontend in
# headless Chromium). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(bash scripts/setup_env.sh)"
bash scripts/install_browser.sh || echo "[test] no Chromium: the frontend tests will be skipped" >&2
export TTO_COMFYUI="$root/comfyui"
exec "$root/venv/bin/python" -m pytest "$@"
