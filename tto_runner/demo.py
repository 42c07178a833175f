"""The tiny demo: a real headless ComfyUI with this pack runs the shipped tiny workflow end to end.

    python -m tto_runner.demo --out demo_output

Writes the deterministic tiny models (once, cached), starts a local server, runs
workflows/api/vlm_teacher_tiny_demo.json over the API, and copies the video, the reward curve, the
trained LoRA and the loop's report into --out. Prints timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from .client import ComfyClient
from .example_workflows import api_path
from .local_server import LocalComfy
from .paths import cache_root

TINY_DEMO = api_path("vlm_teacher_tiny_demo")
FIRST_FRAME = "maze_first_frame.png"
INSTRUCTION = "Move the yellow ball to the red square without touching the X."


def models_cache() -> Path:
    return cache_root() / "tiny-models"


def ensure_tiny_models(models_dir: Path | None = None) -> Path:
    """Write (or reuse) the tiny demo models; deterministic, so a cached copy is as good as a new one."""
    from tto_models.demo import write_demo_models

    models_dir = Path(models_dir or models_cache())
    write_demo_models(models_dir, seed=0)
    return models_dir


def draw_first_frame(size: int = 64, ball=(12, 12)):
    """A maze-like task frame: a yellow ball, a red target square and a black X between them."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    s = size / 64
    bx, by = ball
    d.ellipse([(bx - 6) * s, (by - 6) * s, (bx + 6) * s, (by + 6) * s], fill=(240, 200, 0))
    d.rectangle([46 * s, 46 * s, 58 * s, 58 * s], fill=(220, 30, 30))
    d.line([28 * s, 20 * s, 36 * s, 28 * s], fill="black", width=max(1, round(2 * s)))
    d.line([36 * s, 20 * s, 28 * s, 28 * s], fill="black", width=max(1, round(2 * s)))
    return img


def write_demo_inputs(input_dir: Path) -> None:
    input_dir.mkdir(parents=True, exist_ok=True)
    draw_first_frame().save(input_dir / FIRST_FRAME)


def write_task_video(path: Path, frames: int = 9, fps: int = 24) -> Path:
    """A short clip of the ball moving toward the square (for the score-only workflow)."""
    import av
    import numpy as np

    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    for i in range(frames):
        step = 12 + round(40 * i / max(1, frames - 1))
        img = draw_first_frame(ball=(step, step))
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def run_demo(out: Path, keep_base: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    models = ensure_tiny_models()
    t_models = time.perf_counter() - t0
    base = Path(tempfile.mkdtemp(prefix="tto-demo-"))
    try:
        write_demo_inputs(base / "input")
        server = LocalComfy(base_dir=base, models_dir=models)
        t1 = time.perf_counter()
        with server:
            t_start = time.perf_counter() - t1
            client = ComfyClient(server.url)
            prompt = json.loads(TINY_DEMO.read_text())

            loop_node = _node_of(prompt, "TTOLoop")

            budget = prompt[loop_node]["inputs"]["max_iterations"]

            def show(kind, data):
                if kind == "progress" and str(data.get("node")) == loop_node:
                    phase = "TTO iteration" if data["max"] == budget else "final sampling step"
                    print(f"  {phase} {data['value']}/{data['max']}", flush=True)

            t2 = time.perf_counter()
            prompt_id, history = client.run(prompt, timeout=1800, on_message=show)
            t_run = time.perf_counter() - t2
            files = [client.download(f, out) for f in client.output_files(history)]
            report = next(iter(history["outputs"].get(loop_node, {}).get("text", [])), "{}")
            (out / "tto_report.json").write_text(report)
            lora = next((base / "output" / "loras").glob("*.safetensors"), None)
            if lora is not None:
                shutil.copy(lora, out / lora.name)
                files.append(out / lora.name)
    finally:
        if not keep_base:
            shutil.rmtree(base, ignore_errors=True)
    summary = {"prompt_id": prompt_id, "files": [str(f) for f in files], "models_s": round(t_models, 1),
               "host_start_s": round(t_start, 1), "workflow_s": round(t_run, 1),
               "total_s": round(time.perf_counter() - t0, 1), "report": json.loads(report)}
    return summary


def _node_of(prompt: dict, class_type: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the tiny VLM-teacher demo in a headless ComfyUI.")
    parser.add_argument("--out", default="demo_output", help="folder for the video, reward curve, LoRA, report")
    parser.add_argument("--keep-base", action="store_true", help="keep the server's working folder")
    args = parser.parse_args(argv)
    summary = run_demo(Path(args.out), args.keep_base)
    report = summary.pop("report")
    print(f"TTO: {report['iterations']} iterations, stop: {report['stop_reason']}, loss "
          f"{report['first_loss']:.4f} -> {report['final_loss']:.4f}")
    for f in summary["files"]:
        print(f"wrote {f}")
    print(f"timings: models {summary['models_s']} s, host start {summary['host_start_s']} s, "
          f"workflow {summary['workflow_s']} s, total {summary['total_s']} s")


if __name__ == "__main__":
    main()
