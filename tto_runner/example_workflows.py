"""The pack's workflow templates: their titles, where they live, and the command that writes them.

    python -m tto_runner.example_workflows                                 # a local server, newest frontend
    python -m tto_runner.example_workflows --server http://127.0.0.1:8188  # any ComfyUI with this pack

The API files in workflows/api/ are the source. For each one this writes the UI workflow
example_workflows/<title>.json and its thumbnail <title>.jpg: a picture of the graph loaded in the real
frontend. ComfyUI serves example_workflows/ as the pack's templates, and its template browser names each
one after its file and shows the picture of the same name, so the file name is the title.
tests/test_pack_host.py checks that the two formats agree, that every template loads in the frontends,
and that the server lists and serves them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import requests

from .paths import REPO_ROOT
from .workflow_format import api_to_ui

API_DIR = REPO_ROOT / "workflows" / "api"
TEMPLATE_DIR = REPO_ROOT / "example_workflows"
THUMBNAIL_WIDTH = 640
THUMBNAIL_VIEWPORT = (1280, 960)

# API file stem -> template title (the UI file's name). Titles avoid characters that a URL or a file
# system would treat specially ('/', '?', '#', '%', ':').
TEMPLATE_TITLES = {
    "vlm_teacher_wan22_ti2v": "VLM Teacher - test-time loop on Wan 2.2 TI2V-5B",
    "vlm_teacher_compare_wan22": "VLM Teacher - loop vs Best-of-N vs prompt rewrite on Wan 2.2 TI2V-5B",
    "vlm_teacher_score_video": "VLM Teacher - score a video with yes-no questions",
    "vlm_teacher_tiny_demo": "VLM Teacher - tiny demo on stand-in models (CPU)",
    "vlm_teacher_compare_tiny": "VLM Teacher - loop vs Best-of-N vs prompt rewrite on stand-in models (CPU)",
    "vlm_teacher_toy": "VLM Teacher - test-time loop on the trained ball-to-target toy models (CPU)",
}


def api_path(stem: str) -> Path:
    return API_DIR / f"{stem}.json"


def ui_path(stem: str) -> Path:
    return TEMPLATE_DIR / f"{TEMPLATE_TITLES[stem]}.json"


def thumbnail_path(stem: str) -> Path:
    return TEMPLATE_DIR / f"{TEMPLATE_TITLES[stem]}.jpg"


def untitled_api_files() -> list[str]:
    """API workflows (outside bench/) that have no template title yet."""
    return sorted(p.stem for p in API_DIR.glob("*.json") if p.stem not in TEMPLATE_TITLES)


def write_ui_files(object_info: dict) -> list[Path]:
    """Write example_workflows/<title>.json for every titled API file; remove files no title names."""
    if untitled_api_files():
        raise ValueError(f"no template title for {', '.join(untitled_api_files())}: add one to TEMPLATE_TITLES "
                         f"in {Path(__file__).relative_to(REPO_ROOT)}")
    TEMPLATE_DIR.mkdir(exist_ok=True)
    keep = {ui_path(s).name for s in TEMPLATE_TITLES} | {thumbnail_path(s).name for s in TEMPLATE_TITLES}
    for stale in TEMPLATE_DIR.iterdir():
        if stale.name not in keep:
            stale.unlink()
    written = []
    for stem in TEMPLATE_TITLES:
        ui = api_to_ui(json.loads(api_path(stem).read_text(encoding="utf-8")), object_info)
        ui_path(stem).write_text(json.dumps(ui, indent=1) + "\n", encoding="utf-8")
        written.append(ui_path(stem))
    return written


def write_thumbnails(server_url: str) -> list[Path]:
    """Load every UI template in the server's frontend (headless Chromium) and save its picture."""
    from .frontend import THUMBNAIL_SETTINGS, FrontendSession

    written = []
    with FrontendSession(server_url, viewport=THUMBNAIL_VIEWPORT, settings=THUMBNAIL_SETTINGS) as session:
        for stem in TEMPLATE_TITLES:
            report = session.thumbnail(ui_path(stem), thumbnail_path(stem), width=THUMBNAIL_WIDTH)
            if report["missing_node_types"] or report["page_errors"]:
                raise RuntimeError(f"{ui_path(stem).name} did not load cleanly in {server_url}: "
                                   f"missing {report['missing_node_types']}, errors {report['page_errors']}")
            written.append(thumbnail_path(stem))
    return written


def build(server_url: str) -> list[Path]:
    object_info = requests.get(f"{server_url.rstrip('/')}/object_info", timeout=60).json()
    return write_ui_files(object_info) + write_thumbnails(server_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the UI templates and their thumbnails from workflows/api/.")
    parser.add_argument("--server", help="a running ComfyUI with this pack installed (default: start a local one "
                                         "on the stand-in models with the newest frontend)")
    args = parser.parse_args(argv)
    if args.server:
        written = build(args.server)
    else:
        from .demo import ensure_tiny_models, write_demo_inputs
        from .local_server import LocalComfy
        from .tools import frontend_root
        from .toy_models import write_toy_inputs

        with tempfile.TemporaryDirectory(prefix="tto-templates-") as base:
            write_demo_inputs(Path(base) / "input")  # the demos' first frames show in their pictures
            write_toy_inputs(Path(base) / "input")
            with LocalComfy(base_dir=base, models_dir=ensure_tiny_models(),
                            extra_args=["--front-end-root", str(frontend_root())]) as server:
                written = build(server.url)
    for path in written:
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
