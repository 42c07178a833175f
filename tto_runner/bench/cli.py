"""The tto-bench command: its options, the run (plan, resume, servers, workers, summary) and the exit code."""

from __future__ import annotations

import argparse
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..local_server import LocalComfy
from ..paths import REPO_ROOT
from .records import Summary, base_record, equal_wall_n, run_means
from .scheduler import Job, TaskQueue, Worker, check_server, run_workers
from .tasks import FIRST_FRAME, PROMPT_FILE, BenchError, discover_tasks
from .templates import (INSTRUCTION_TITLE, METHODS, MODEL_SETS, SETTING_TARGETS, check_settings, config_hash,
                        latent_size, load_template, template_path)


CPU_MODEL_SETS = ("tiny", "toy")   # small enough for a CPU; their templates fix the size (the toy world's is 128x128)


def default_local_device(models: str) -> str:
    return "cpu" if models in CPU_MODEL_SETS else "gpu"


def default_size_policy(models: str) -> str:
    return "template" if models in CPU_MODEL_SETS else "image"


def local_server(args: argparse.Namespace, base_dir: Path) -> LocalComfy:
    """The local ComfyUI that serves a run without --server (not started yet)."""
    if args.models == "toy":
        from ..toy_models import ToyModelsError, check_models_dir, ensure_toy_models

        try:
            models_dir = (check_models_dir(Path(args.models_dir)) if args.models_dir is not None else
                          ensure_toy_models(log=lambda line: print(line, file=sys.stderr, flush=True)))
        except ToyModelsError as e:
            raise BenchError(str(e)) from None
    elif args.models_dir is not None:
        models_dir = args.models_dir
    elif args.models == "tiny":
        from ..demo import ensure_tiny_models

        models_dir = ensure_tiny_models()
    else:
        raise BenchError("--models wan22 without --server needs --models-dir: a ComfyUI models folder holding "
                         "the real model files (or start ComfyUI yourself and pass --server)")
    device = args.local_device or default_local_device(args.models)
    return LocalComfy(host_dir=args.comfyui, base_dir=base_dir, models_dir=models_dir, cpu=(device == "cpu"))


class Progress:
    """A tqdm bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.total = total
        self.n = 0
        self.bar = None
        if self.stream.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="task", file=self.stream, dynamic_ncols=True)
            except ImportError:
                pass

    def note(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def advance(self, line: str) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix_str(line[:60], refresh=False)
            self.bar.update(1)
        else:
            print(f"[{self.n}/{self.total}] {line}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_bench(args: argparse.Namespace) -> dict:
    """Run the benchmark described by parsed arguments (build_parser().parse_args(...)); returns the summary's
    path, the status counts and how many tasks ran, were skipped, were invalid."""
    method, models = args.method, args.models
    if args.max_attempts < 1:
        raise BenchError("--max-attempts must be at least 1")
    if args.workflow:
        tpath = Path(args.workflow)
    else:
        tpath = template_path(method, models)
        if not tpath.is_file():
            raise BenchError(f"no template for --method {method} --models {models} ({tpath.relative_to(REPO_ROOT)});"
                             f" pass --workflow")
    template = load_template(tpath)
    n_from = None
    if args.n_from is not None:
        if args.n is not None:
            raise BenchError("--n and --n-from both set N; give one")
        args.n, means = equal_wall_n(Path(args.n_from))
        n_from = {"run": str(args.n_from), "equal_wall_samples": round(means["equal_wall_samples"], 3),
                  "tasks": means["tasks"], "n": args.n, "tto_wall_s": means["wall_s"]}
    settings = {"seed": args.seed, **{name: getattr(args, name) for name in SETTING_TARGETS}}
    takes_prompt = check_settings(template, settings, tpath.name)
    size_policy = args.size or default_size_policy(models)
    latent_size((64, 64), size_policy, (64, 64))  # refuse a malformed --size now
    config = config_hash(template, settings, size_policy)
    out_dir = Path(args.out) / method
    template_name = (tpath.resolve().relative_to(REPO_ROOT).as_posix() if tpath.resolve().is_relative_to(REPO_ROOT)
                     else tpath.name)
    summary = Summary(out_dir / "summary.json", {
        "method": method, "models": models, "template": template_name, "config": config,
        "settings": {k: v for k, v in settings.items() if v is not None}, "size": size_policy,
        **({"n_from": n_from} if n_from else {})})

    tasks = discover_tasks(args.tasks)
    if not tasks:
        raise BenchError(f"no task folders (holding {FIRST_FRAME} and {PROMPT_FILE}) under {args.tasks}")
    if args.limit:
        tasks = tasks[:args.limit]
    invalid = [t for t in tasks if t.error]
    for t in invalid:
        summary.records[t.id] = base_record(t, method, "invalid", config)
    valid = [t for t in tasks if not t.error]
    todo = [t for t in valid if args.force or not summary.is_done(t, config, out_dir)]
    skipped = len(valid) - len(todo)
    progress = Progress(len(todo))
    progress.note(f"tto-bench: {len(tasks)} task folders, {len(invalid)} invalid, {skipped} already done, "
                  f"{len(todo)} to run ({method}, {models}, {template_name})")
    if n_from:
        progress.note(f"--n {args.n}: the mean equal_wall_samples ({n_from['equal_wall_samples']}) of "
                      f"{n_from['tasks']} done tasks in {args.n_from}")
    for t in invalid:
        progress.note(f"invalid: {t.id}: {t.error}")
    if not takes_prompt:
        progress.note(f"note: {template_name} has no node titled '{INSTRUCTION_TITLE}', no text wired to a positive "
                      f"input and no unwired teacher instruction, so {PROMPT_FILE} is not used")
    summary.write()
    result = {"summary": str(summary.path), "to_run": len(todo), "skipped": skipped, "invalid": len(invalid)}
    try:
        if todo:
            job = Job(method, template, settings, size_policy, config, out_dir, args.timeout, args.max_attempts,
                      args.request_timeout)
            _run(args, job, todo, summary, progress)
    finally:
        progress.close()
    return dict(result, counts=summary.counts(), means=run_means(summary.records.values(), config), n_from=n_from)


def _run(args: argparse.Namespace, job: Job, todo: list, summary: Summary, progress: Progress) -> None:
    local = None
    try:
        urls = [u.rstrip("/") for u in args.server or []]
        if not urls:
            local = local_server(args, Path(tempfile.mkdtemp(prefix="tto-bench-server-")))
            progress.note(f"starting a local ComfyUI ({'cpu' if local.cpu else 'gpu'}) in {local.base_dir}")
            local.start(timeout=300)
            progress.note(f"local ComfyUI ready at {local.url} ({local.start_seconds:.1f} s)")
            urls = [local.url]
        events: queue.Queue = queue.Queue()
        work = TaskQueue(todo)
        workers = []
        for url in dict.fromkeys(urls):
            problem = check_server(url, job.template, args.request_timeout)
            summary.servers[url] = {"url": url, "status": "dropped" if problem else "ok", "error": problem,
                                    "tasks_done": 0}
            if problem:
                progress.note(f"server {url} {problem}; not used")
                continue
            work.add_worker(url)
            workers.append(Worker(url, job, work, events))
        if not workers:
            raise BenchError("no usable server: " + "; ".join(f"{u}: {s['error']}" for u, s in summary.servers.items()))

        def on_record(record: dict) -> None:
            summary.put(record)
            line = f"{record['status']} {record['task']}"
            if record["status"] == "done":
                line += f" ({record['seconds']:.1f} s on {record['server']})"
            else:
                line += f": {record['error']}"
            progress.advance(line)

        def on_retry(task, url: str, why: str) -> None:
            progress.note(f"retrying {task.id} (attempt {task.attempts} on {url} failed: {why})")

        def on_dropped(url: str, why: str) -> None:
            summary.servers[url].update(status="dropped", error=why)
            summary.write()
            progress.note(f"dropped server {url}: {why}")

        try:
            run_workers(workers, work, events, on_record, on_retry, on_dropped)
        finally:
            for w in workers:
                summary.servers[w.url]["tasks_done"] = w.done
            summary.write()
        for task in work.drain():  # left when every server was lost
            record = base_record(task, job.method, "failed", job.config)
            record["error"] = "no server left to run it (every server was dropped)"
            summary.put(record)
    finally:
        if local is not None:
            local.stop()
            if not args.keep_server_dir:
                shutil.rmtree(local.base_dir, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tto-bench", description="Run benchmark tasks (first_frame.png + prompt.txt folders) through a method's "
        "workflow on one or more ComfyUI servers; write <out>/<method>/<task>.mp4 and summary.json.")
    p.add_argument("--tasks", required=True, help="folder of task folders (searched recursively)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--models", default="tiny", choices=MODEL_SETS,
                   help="which templates: tiny (the tiny demo models), toy (the trained ball-to-target toy world, "
                        "tto_models/toy) or wan22 (real Wan 2.2 TI2V-5B file names)")
    p.add_argument("--workflow",
                   help="API-format template to use instead of workflows/api/bench/<method>_<models>.json")
    p.add_argument("--out", required=True, help="output folder; results go to <out>/<method>/")
    p.add_argument("--server", action="append", metavar="URL",
                   help="a ComfyUI server with this pack (repeat for several); default: start one locally")
    g = p.add_argument_group("method settings (default: the template's values)")
    g.add_argument("--seed", type=int, help="noise seed of every sampler / loop node")
    g.add_argument("--n", type=int, help="best_of_n: candidates per task")
    g.add_argument("--n-from", metavar="TTO_RUN", help="best_of_n: N from a finished tto run (<out>/tto or its "
                   "summary.json): its mean cost.equal_wall_samples, rounded, i.e. Best-of-N at TTO's wall time")
    g.add_argument("--max-iterations", type=int, help="tto: iteration budget")
    g.add_argument("--learning-rate", "--lr", dest="learning_rate", type=float, help="tto: LoRA learning rate")
    g.add_argument("--loss-threshold", type=float, help="tto: stop at this teacher loss")
    g.add_argument("--frames", type=int, help="tto, best_of_n: frames K shown to the teacher")
    g.add_argument("--steps", type=int, help="sampling steps of the final video")
    g.add_argument("--cfg", type=float, help="classifier-free guidance")
    g.add_argument("--length", type=int, help="video length in frames (4n+1)")
    g.add_argument("--size", help="video size: image (the first frame's, rounded to multiples of 32 and capped at "
                                  "the template's pixel count; default for wan22), template (default for tiny and toy) "
                                  "or WIDTHxHEIGHT")
    r = p.add_argument_group("running")
    r.add_argument("--timeout", type=float, default=3600, help="seconds one task may run before it is retried "
                                                                "elsewhere (default 3600)")
    r.add_argument("--request-timeout", type=float, default=60, help="seconds one HTTP request to a server may "
                   "take before the server counts as not answering (default 60)")
    r.add_argument("--max-attempts", type=int, default=3, help="attempts per task across servers (default 3)")
    r.add_argument("--force", action="store_true", help="run every task again, even those already done")
    r.add_argument("--limit", type=int, help="only the first N task folders (by id)")
    r.add_argument("--models-dir", help="models folder for the local server (default for tiny: the tiny models; "
                                        "for toy: the cached toy models, trained on first use)")
    r.add_argument("--comfyui", help="ComfyUI folder for the local server (default: $TTO_COMFYUI or the one "
                                     "scripts/setup_env.sh builds)")
    r.add_argument("--local-device", choices=("cpu", "gpu"),
                   help="device of the local server (default: cpu for tiny and toy, gpu for wan22)")
    r.add_argument("--keep-server-dir", action="store_true", help="keep the local server's working folder")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.monotonic()
    try:
        result = run_bench(args)
    except BenchError as e:
        print(f"tto-bench: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tto-bench: interrupted; finished tasks are in the summary", file=sys.stderr)
        return 130
    counts = result["counts"]
    print(f"tto-bench: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}; ran {result['to_run']}, "
          f"skipped {result['skipped']} in {time.monotonic() - t0:.1f} s; summary: {result['summary']}",
          file=sys.stderr)
    means = result["means"]
    if means["tasks"]:
        wall = f", cost.wall_s {means['wall_s']:.2f} s" if means["wall_s"] is not None else ""
        print(f"tto-bench: mean per done task ({means['tasks']}): {means['seconds']:.2f} s upload to download{wall}",
              file=sys.stderr)
    n_from = result["n_from"]
    if n_from and means["wall_s"] is not None and n_from["tto_wall_s"] is not None:
        # equal_wall_samples counts plain samples; each Best-of-N candidate is also decoded and graded
        print(f"tto-bench: at --n {n_from['n']} Best-of-N spent {means['wall_s']:.2f} s (mean cost.wall_s) against "
              f"{n_from['tto_wall_s']:.2f} s for TTO in {n_from['run']}", file=sys.stderr)
    if means["equal_wall_samples"] is not None:
        n = max(1, round(means["equal_wall_samples"]))
        print(f"tto-bench: Best-of-N at this run's wall time: --n {n} (mean equal_wall_samples "
              f"{means['equal_wall_samples']:.2f}; or pass --n-from {Path(result['summary']).parent})",
              file=sys.stderr)
    return 1 if counts.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
