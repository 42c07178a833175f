"""Write the UI-format workflow for every API-format workflow in workflows/api/.

    python scripts/build_workflows.py --server http://127.0.0.1:8188

The API files are the source; the server (any ComfyUI with this pack installed) supplies each node's
input order. tests/test_pack_host.py checks that the two formats agree on a live server.
"""

import argparse
import json
import pathlib
import sys

import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tto_runner.workflow_format import api_to_ui  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    args = parser.parse_args()
    object_info = requests.get(f"{args.server}/object_info", timeout=60).json()
    for api_path in sorted((ROOT / "workflows" / "api").glob("*.json")):
        ui = api_to_ui(json.loads(api_path.read_text()), object_info)
        out = ROOT / "workflows" / api_path.name
        out.write_text(json.dumps(ui, indent=1) + "\n")
        print(f"wrote {out.relative_to(ROOT)} ({len(ui['nodes'])} nodes, {len(ui['links'])} links)")


if __name__ == "__main__":
    main()
