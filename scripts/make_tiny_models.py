#!/usr/bin/env python
"""Write the tiny, seed-deterministic demo models into a ComfyUI ``models/`` folder.

    python scripts/make_tiny_models.py --models-dir /path/to/ComfyUI/models [--seed 0]

Writes diffusion_models/tiny_wan22_ti2v.safetensors, vae/tiny_wan22_vae.safetensors (~1.4 GB),
vae/tiny_taew2_2.safetensors, LLM/tiny-qwen3-vl/ and conditioning/tiny_prompt.safetensors, plus a
manifest; files that already match the manifest for the same seed are kept. Nothing is downloaded.
"""

import argparse
import pathlib
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tto_engine.tiny import write_demo_models  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", required=True, type=pathlib.Path,
                        help="a ComfyUI models/ folder (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of all weights (default 0)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = write_demo_models(args.models_dir, seed=args.seed, log=lambda line: print(line, flush=True))
    print(f"manifest        {paths['manifest']}")
    print(f"done in {time.perf_counter() - start:.1f} s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
