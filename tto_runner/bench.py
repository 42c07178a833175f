"""tto-bench: run a benchmark's tasks through one workflow per method on any number of ComfyUI servers.

    tto-bench --tasks VBVR-Bench/ --method tto --models tiny --out runs/
    tto-bench --tasks VBVR-Bench/ --method baseline --models wan22 --out runs/ \\
        --server http://gpu0:8188 --server http://gpu1:8188

A task is a folder holding `first_frame.png` and `prompt.txt` (VBVR-Bench layout: `<split>/<task>/00000/`);
its id is its path relative to --tasks. For every task the runner fills the method's API-format template
(workflows/api/bench/<method>_<models>.json, or --workflow), queues it on a free server, and saves the
video as `<out>/<method>/<task id>.mp4` (`<split>/<task>/00000.mp4`, the layout VBVR-EvalKit reads), with
one record per task in `<out>/<method>/summary.json`.

Scale-out is more ComfyUI servers: one worker thread per server pulls from a shared task queue. A task
whose server fails (connection lost, server died, timeout) goes back to the queue for another server, and a
server that no longer answers a health check is dropped. A task whose prompt fails on its own (rejected at
validation, or a node raised) is tried at most twice, then recorded as failed. Re-running with the same
settings skips the tasks already done.
"""

from __future__ import annotations

import argparse
import collections
import copy
import datetime
import hashlib
import json
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import websocket

from .client import ComfyClient, PromptFailed, PromptInterrupted, PromptRejected
from .local_server import REPO_ROOT, LocalComfy
from .workflow_format import is_link

METHODS = ("baseline", "best_of_n", "solver", "tto")
MODEL_SETS = ("tiny", "wan22")
TEMPLATE_DIR = REPO_ROOT / "workflows" / "api" / "bench"
FIRST_FRAME = "first_frame.png"
PROMPT_FILE = "prompt.txt"
MIN_SIDE = 32          # smaller first frames are reported as invalid
MAX_ASPECT = 4.0       # and so are frames more elongated than this
TASK_FAILURE_ATTEMPTS = 2   # a prompt that fails for its own reasons is tried at most this often
REPORT_NODES = ("TeacherAnalyze", "TTOLoop", "BestOfNSample", "TeacherRewritePrompt")
INSTRUCTION_NODES = ("TeacherAnalyze", "TeacherRewritePrompt")
STRING_PRIMITIVES = ("PrimitiveStringMultiline", "PrimitiveString")
SEED_INPUTS = ("seed", "noise_seed")


class BenchError(RuntimeError):
    """A problem with the command line, the template or the servers: nothing can run."""


# --------------------------------------------------------------------------------------------- tasks


@dataclass
class Task:
    id: str                      # path relative to --tasks, with "/" separators
    dir: Path
    prompt: str | None = None
    size: tuple[int, int] | None = None   # first frame (width, height)
    error: str | None = None     # set: the folder is invalid, with the reason
    attempts: int = 0
    task_failures: int = 0
    avoid: set = field(default_factory=set)   # servers to prefer not to use (the task failed there)
    attempt_log: list = field(default_factory=list)

    @property
    def first_frame(self) -> Path:
        return self.dir / FIRST_FRAME


def discover_tasks(root: str | os.PathLike) -> list[Task]:
    """Every folder under `root` (recursively, `root` included) that holds first_frame.png or prompt.txt.
    A folder with both, a non-empty prompt and a readable image of sensible size is a task; any other is
    returned with `error` set (invalid). Sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"--tasks {root}: not a folder")
    tasks = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = set(filenames)
        if FIRST_FRAME not in names and PROMPT_FILE not in names:
            continue
        folder = Path(dirpath)
        rel = folder.relative_to(root).as_posix()
        task = Task(id=root.resolve().name if rel == "." else rel, dir=folder)
        task.error = _check_task(task, names)
        tasks.append(task)
    return sorted(tasks, key=lambda t: t.id)


def _check_task(task: Task, names: set) -> str | None:
    if PROMPT_FILE not in names:
        return f"{FIRST_FRAME} without {PROMPT_FILE}"
    if FIRST_FRAME not in names:
        return f"{PROMPT_FILE} without {FIRST_FRAME}"
    try:
        text = (task.dir / PROMPT_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return f"{PROMPT_FILE} cannot be read as UTF-8 text: {e}"
    if not text.strip():
        return f"{PROMPT_FILE} is empty"
    task.prompt = text.strip()
    from PIL import Image

    try:
        with Image.open(task.first_frame) as img:
            img.load()
            task.size = img.size
    except Exception as e:  # PIL raises many kinds for broken files
        return f"{FIRST_FRAME} cannot be read as an image: {type(e).__name__}: {e}"
    w, h = task.size
    if min(w, h) < MIN_SIDE:
        return f"{FIRST_FRAME} is {w}x{h}; both sides must be at least {MIN_SIDE} px"
    if max(w, h) / min(w, h) > MAX_ASPECT:
        return f"{FIRST_FRAME} is {w}x{h}; an aspect ratio above {MAX_ASPECT:g}:1 is not a video frame"
    return None


# --------------------------------------------------------------------------------------------- templates


def template_path(method: str, models: str) -> Path:
    return TEMPLATE_DIR / f"{method}_{models}.json"


def load_template(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        prompt = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"workflow template {path} not found") from None
    except ValueError as e:
        raise BenchError(f"workflow template {path} is not JSON: {e}") from None
    if not isinstance(prompt, dict) or not all(isinstance(v, dict) and "class_type" in v for v in prompt.values()):
        raise BenchError(f"{path} is not an API-format workflow ({{id: {{class_type, inputs}}}}); export it with "
                         f"'Export (API)' in ComfyUI")
    output_node(prompt, path)
    return prompt


def output_node(prompt: dict, where: Any = "the template") -> str:
    """The SaveVideo node whose video is the task's result: the only one, or the one titled 'result'."""
    saves = [k for k, v in prompt.items() if v["class_type"] == "SaveVideo"]
    if len(saves) > 1:
        saves = [k for k in saves if str(prompt[k].get("_meta", {}).get("title", "")).lower() == "result"]
    if len(saves) != 1:
        raise BenchError(f"{where} needs exactly one SaveVideo node (or one with _meta title 'result'); "
                         f"it has {sum(v['class_type'] == 'SaveVideo' for v in prompt.values())}")
    return saves[0]


def round32(x: float) -> int:
    return max(32, int(round(x / 32.0)) * 32)


def latent_size(image_size: tuple[int, int], policy: str, template_size: tuple[int, int]) -> tuple[int, int]:
    """Width and height for Wan22ImageToVideoLatent.

    policy "template": the template's own size. "image": the first frame's size rounded to multiples of 32,
    scaled down (same aspect) when it holds more pixels than the template's size. "WxH": that size, rounded
    to multiples of 32."""
    if policy == "template":
        return template_size
    if policy == "image":
        w, h = image_size
        budget = template_size[0] * template_size[1]
        if w * h > budget:
            scale = (budget / (w * h)) ** 0.5
            w, h = w * scale, h * scale
        rw, rh = round32(w), round32(h)
        while rw * rh > budget and max(rw, rh) > 32:  # rounding up may overshoot the budget
            if rw >= rh:
                rw -= 32
            else:
                rh -= 32
        return rw, rh
    m = re.fullmatch(r"(\d+)[xX](\d+)", policy)
    if not m:
        raise BenchError(f"--size {policy!r}: use image, template or WIDTHxHEIGHT")
    return round32(int(m.group(1))), round32(int(m.group(2)))


# Method settings: CLI name -> [(node class, input name)] they set. None leaves the template's value.
SETTING_TARGETS: dict[str, list[tuple[str, str]]] = {
    "n": [("BestOfNSample", "n")],
    "max_iterations": [("TTOLoop", "max_iterations")],
    "lr": [("TTOLoop", "learning_rate")],
    "loss_threshold": [("TTOLoop", "loss_threshold")],
    "frames": [("TTOLoop", "frames"), ("BestOfNSample", "frames")],
    "steps": [("KSampler", "steps"), ("TTOLoop", "steps"), ("BestOfNSample", "steps")],
    "cfg": [("KSampler", "cfg"), ("TTOLoop", "cfg"), ("BestOfNSample", "cfg")],
    "length": [("Wan22ImageToVideoLatent", "length")],
}


def fill_template(template: dict, task: Task, image_name: str, settings: dict, prefix: str,
                  size_policy: str = "template") -> tuple[dict, set]:
    """The template filled for one task; also returns the names of the settings it applied (plus "prompt"
    when the instruction landed somewhere)."""
    prompt = copy.deepcopy(template)
    applied = set()
    for node in prompt.values():
        cls, inputs = node["class_type"], node.setdefault("inputs", {})
        if cls == "LoadImage":
            inputs["image"] = image_name
        elif cls in STRING_PRIMITIVES:
            inputs["value"] = task.prompt
            applied.add("prompt")
        elif cls in INSTRUCTION_NODES and not is_link(inputs.get("instruction")):
            inputs["instruction"] = task.prompt
            applied.add("prompt")
        elif cls == "Wan22ImageToVideoLatent" and task.size is not None:
            size = latent_size(task.size, size_policy, (inputs.get("width", 832), inputs.get("height", 480)))
            inputs["width"], inputs["height"] = size
        elif cls == "SaveVideo":
            inputs["filename_prefix"] = prefix
        if settings.get("seed") is not None:
            for name in SEED_INPUTS:
                if name in inputs and not is_link(inputs[name]):
                    inputs[name] = settings["seed"]
                    applied.add("seed")
        for setting, targets in SETTING_TARGETS.items():
            value = settings.get(setting)
            if value is None:
                continue
            for target_cls, name in targets:
                if cls == target_cls and not is_link(inputs.get(name)):
                    inputs[name] = value
                    applied.add(setting)
    return prompt, applied


def check_settings(template: dict, settings: dict, where: str) -> bool:
    """Refuse settings that no node of the template takes (e.g. --n for the tto method). Returns whether
    the template has a place for the task's prompt."""
    probe = Task(id="probe", dir=Path("."), prompt="probe", size=(832, 480))
    _, applied = fill_template(template, probe, "probe.png", settings, "probe")
    unused = [k for k, v in settings.items() if v is not None and k not in applied]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        raise BenchError(f"{flags}: no node in {where} takes {'it' if len(unused) == 1 else 'them'}")
    return "prompt" in applied


def config_hash(template: dict, settings: dict, size_policy: str) -> str:
    blob = json.dumps({"template": template, "settings": settings, "size": size_policy}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def task_slug(task_id: str) -> str:
    """A short, file-name-safe, unique name for a task id."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", task_id).strip("._")[-60:]
    return f"{safe}_{hashlib.sha1(task_id.encode()).hexdigest()[:8]}"


# --------------------------------------------------------------------------------------------- reports


def _read_reports(prompt: dict, history: dict) -> dict:
    """{class_type: parsed report} of the report-producing nodes (their ui text) in a history entry."""
    reports = {}
    for node_id, output in (history.get("outputs") or {}).items():
        cls = prompt.get(node_id, {}).get("class_type")
        if cls not in REPORT_NODES:
            continue
        texts = (output or {}).get("text") or []
        if not texts:
            continue
        try:
            reports[cls] = json.loads(texts[0])
        except (ValueError, TypeError):
            reports[cls] = {"unparsed": str(texts[0])[:2000]}
    return reports


def _summarise_reports(record: dict, reports: dict, prompt: dict) -> None:
    """Fill iterations, stop_reason, final_loss, scores and cost from the node reports."""
    loop = reports.get("TTOLoop")
    if loop:
        record["iterations"] = loop.get("iterations")
        record["stop_reason"] = loop.get("stop_reason")
        record["final_loss"] = loop.get("final_loss")
        record["first_loss"] = loop.get("first_loss")
        record["scores"] = [{"question": q.get("question"), "kind": q.get("kind"), "score": q.get("final_score"),
                             "first_score": q.get("first_score")} for q in loop.get("queries") or []]
    best = reports.get("BestOfNSample")
    if best:
        record["best_seed"] = best.get("best_seed")
        record["final_loss"] = best.get("best_loss")
        samples = best.get("samples") or []
        record["candidates"] = [{k: s.get(k) for k in ("seed", "loss", "score")} for s in samples]
        chosen = next((s for s in samples if s.get("seed") == best.get("best_seed")), None)
        if chosen is not None:
            record["scores"] = [{"query": i, "score": v} for i, v in enumerate(chosen.get("query_scores") or [])]
    rewrite = reports.get("TeacherRewritePrompt")
    if rewrite:
        record["rewritten_prompt"] = rewrite.get("prompt")
    costs = [r["cost"] for r in reports.values() if isinstance(r.get("cost"), dict)]
    if costs:
        total: dict[str, Any] = {}
        for cost in costs:
            for k, v in cost.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    total[k] = round(total.get(k, 0) + v, 6)
                else:
                    total.setdefault(k, v)
        record["cost"] = total
    else:
        # No node reported a cost (a plain KSampler workflow): count the sampler's model passes.
        forwards = 0
        for node in prompt.values():
            if node["class_type"] in ("KSampler", "KSamplerAdvanced"):
                inputs = node["inputs"]
                forwards += int(inputs.get("steps", 0)) * (1 if float(inputs.get("cfg", 1.0)) == 1.0 else 2)
        if forwards:
            record["cost"] = {"reasoner_forward": forwards, "reasoner_backward": 0, "teacher_forward": 0,
                              "teacher_backward": 0, "teacher_generate": 0, "counted_from": "sampler settings"}


# --------------------------------------------------------------------------------------------- servers


class ServerLost(RuntimeError):
    """The server stopped answering (or died) while a task ran on it."""


SERVER_ERRORS = (requests.ConnectionError, requests.Timeout, websocket.WebSocketException, ConnectionError,
                 TimeoutError, OSError)


def server_answers(url: str, tries: int = 3, timeout: float = 5.0, pause: float = 1.0) -> bool:
    """A bounded health check: GET /system_stats up to `tries` times."""
    for i in range(tries):
        try:
            r = requests.get(url.rstrip("/") + "/system_stats", timeout=timeout)
            if r.status_code == 200:
                return True
        except requests.RequestException:
            pass
        if i + 1 < tries:
            time.sleep(pause)
    return False


def check_server(url: str, template: dict, timeout: float = 60) -> str | None:
    """None when the server answers and has every node class the template uses, else the problem."""
    try:
        info = requests.get(url.rstrip("/") + "/object_info", timeout=timeout)
        info.raise_for_status()
        classes = info.json()
    except (requests.RequestException, ValueError) as e:
        return f"does not answer: {type(e).__name__}: {e}"
    missing = sorted({v["class_type"] for v in template.values()} - set(classes))
    if missing:
        return f"lacks node types {', '.join(missing)} (install or update this pack and its dependencies there)"
    return None


class _LocalServer(LocalComfy):
    """LocalComfy, optionally without --cpu (a local GPU)."""

    def __init__(self, *args, cpu: bool = True, **kw):
        super().__init__(*args, **kw)
        self.cpu = cpu

    def command(self) -> list[str]:
        cmd = super().command()
        return cmd if self.cpu else [c for c in cmd if c != "--cpu"]


# --------------------------------------------------------------------------------------------- scheduling


class TaskQueue:
    """Shared work list. get() hands a worker the first pending task not marked to avoid that worker's
    server (unless no other live worker could take it), and returns None once nothing is pending or in
    flight, or when the worker's server was dropped."""

    def __init__(self, tasks):
        self._pending = collections.deque(tasks)
        self._in_flight = 0
        self._cond = threading.Condition()
        self._live: set[str] = set()
        self.stopped = False

    def add_worker(self, url: str) -> None:
        with self._cond:
            self._live.add(url)

    def drop_worker(self, url: str) -> None:
        with self._cond:
            self._live.discard(url)
            self._cond.notify_all()

    def live_workers(self) -> int:
        with self._cond:
            return len(self._live)

    def get(self, url: str) -> Task | None:
        with self._cond:
            while True:
                if self.stopped or url not in self._live:
                    return None
                if not self._pending and self._in_flight == 0:
                    return None
                others = self._live - {url}
                for task in self._pending:
                    if url not in task.avoid or not (others - task.avoid):
                        self._pending.remove(task)
                        self._in_flight += 1
                        return task
                self._cond.wait(0.5)

    def finish(self, task: Task) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def retry(self, task: Task) -> None:
        with self._cond:
            self._in_flight -= 1
            self._pending.appendleft(task)
            self._cond.notify_all()

    def drain(self) -> list[Task]:
        """Take every pending task (when no server is left)."""
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
            return left

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()


@dataclass
class Job:
    """Everything a worker needs to run one task, fixed for the whole run."""
    method: str
    template: dict
    settings: dict
    size_policy: str
    config: str
    out_dir: Path           # <out>/<method>
    timeout: float
    max_attempts: int
    request_timeout: float = 60.0


class Worker(threading.Thread):
    """Runs tasks on one server until the queue is empty or the server is lost. Reports every finished
    task (and every retry) to `events` as (kind, payload)."""

    def __init__(self, url: str, job: Job, tasks: TaskQueue, events: queue.Queue):
        super().__init__(name=f"tto-bench {url}", daemon=True)
        self.url = url.rstrip("/")
        self.job = job
        self.tasks = tasks
        self.events = events
        self.client = ComfyClient(self.url, timeout=job.request_timeout)
        self.current: tuple[Task, str] | None = None   # (task, prompt_id) while one runs
        self.done = 0
        self.dropped: str | None = None

    def run(self) -> None:
        try:
            while True:
                task = self.tasks.get(self.url)
                if task is None:
                    return
                self._attempt(task)
                if self.dropped:
                    return
        finally:
            self.tasks.drop_worker(self.url)
            self.client.close()

    def _attempt(self, task: Task) -> None:
        task.attempts += 1
        started = time.monotonic()
        try:
            record = self._run_task(task)
        except (PromptFailed, PromptRejected) as e:
            task.task_failures += 1
            self._log(task, e, started)
            if task.task_failures < TASK_FAILURE_ATTEMPTS and task.attempts < self.job.max_attempts:
                task.avoid.add(self.url)
                self.tasks.retry(task)
                self.events.put(("retry", (task, self.url, _describe(e))))
            else:
                self._failed(task, e, started)
        except (PromptInterrupted, *SERVER_ERRORS) as e:
            # The server's trouble, not the task's: interrupted by someone, connection lost, timed out.
            self._log(task, e, started)
            if isinstance(e, TimeoutError):
                self._interrupt_current()
            if not isinstance(e, PromptInterrupted) and not server_answers(
                    self.url, timeout=min(5.0, self.job.request_timeout)):
                self.dropped = f"stopped answering during task {task.id}: {_describe(e)}"
                self.events.put(("dropped", (self.url, self.dropped)))
            if task.attempts < self.job.max_attempts:
                task.avoid.add(self.url)
                self.tasks.retry(task)
                self.events.put(("retry", (task, self.url, _describe(e))))
            else:
                self._failed(task, e, started)
        except Exception as e:  # our own problem with this task (e.g. no video in the outputs): record it
            task.task_failures += 1
            self._log(task, e, started)
            self._failed(task, e, started)
        else:
            self.done += 1
            self.tasks.finish(task)
            self.events.put(("record", record))
        finally:
            self.current = None

    def _log(self, task: Task, error: BaseException, started: float) -> None:
        task.attempt_log.append({"server": self.url, "error": _describe(error),
                                 "seconds": round(time.monotonic() - started, 2)})

    def _failed(self, task: Task, error: BaseException, started: float) -> None:
        record = base_record(task, self.job.method, "failed", self.job.config)
        record.update(error=_describe(error), server=self.url, seconds=round(time.monotonic() - started, 2))
        if isinstance(error, PromptFailed) and error.traceback:
            record["traceback"] = error.traceback[-4000:]
        self.tasks.finish(task)
        self.events.put(("record", record))

    def _interrupt_current(self) -> None:
        """Take our prompt off the server: out of the queue if it waits there, interrupted if it runs."""
        if self.current:
            prompt_id = self.current[1]
            try:
                self.client.session.post(self.url + "/queue", json={"delete": [prompt_id]},
                                         timeout=self.job.request_timeout)
                self.client.interrupt(prompt_id)
            except requests.RequestException:
                pass

    def _run_task(self, task: Task) -> dict:
        job = self.job
        started = time.monotonic()
        slug = task_slug(task.id)
        image = self.client.upload_image(task.first_frame, subfolder=f"tto_bench/{slug}")
        prefix = f"tto_bench/{job.method}/{slug}"
        prompt, _ = fill_template(job.template, task, image, job.settings, prefix, job.size_policy)
        prompt_id = self.client.queue(prompt)
        self.current = (task, prompt_id)
        summary = self.client.wait(prompt_id, timeout=job.timeout)
        history = summary["history"]
        save = output_node(prompt)
        videos = [f for f in self.client.output_files(history) if f["node_id"] == save]
        if not videos:
            raise RuntimeError(f"the SaveVideo node ({save}) listed no file in the prompt's outputs")
        dest = job.out_dir / f"{task.id}.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = self.client.view(videos[0])
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        record = base_record(task, job.method, "done", job.config)
        reports = _read_reports(prompt, history)
        _summarise_reports(record, reports, prompt)
        seconds = round(time.monotonic() - started, 2)
        latent = next((v["inputs"] for v in prompt.values() if v["class_type"] == "Wan22ImageToVideoLatent"), {})
        record.update(server=self.url, seconds=seconds, prompt_id=prompt_id, video=f"{task.id}.mp4",
                      size=[latent["width"], latent["height"]] if "width" in latent else None,
                      length=latent.get("length"), reports=reports or None)
        return record


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, SERVER_ERRORS) and not isinstance(error, TimeoutError):
        text = f"server error: {type(error).__name__}: {text}"
    return text[:2000]


def base_record(task: Task, method: str, status: str, config: str | None) -> dict:
    return {"task": task.id, "method": method, "status": status, "error": task.error if status == "invalid" else None,
            "iterations": None, "stop_reason": None, "final_loss": None, "scores": None, "cost": None,
            "server": None, "seconds": None, "attempts": task.attempts, "attempt_log": list(task.attempt_log),
            "config": config}


# --------------------------------------------------------------------------------------------- summary


class Summary:
    """<out>/<method>/summary.json, rewritten atomically after every change."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.header = header
        self.records: dict[str, dict] = {}
        self.servers: dict[str, dict] = {}
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            for r in old.get("tasks", []):
                if isinstance(r, dict) and "task" in r:
                    self.records[r["task"]] = r
        except (OSError, ValueError):
            pass

    def is_done(self, task: Task, config: str, out_dir: Path) -> bool:
        r = self.records.get(task.id)
        return bool(r and r.get("status") == "done" and r.get("config") == config
                    and (out_dir / f"{task.id}.mp4").is_file())

    def put(self, record: dict) -> None:
        self.records[record["task"]] = record
        self.write()

    def write(self) -> None:
        counts = collections.Counter(r.get("status") for r in self.records.values())
        body = dict(self.header, updated=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    counts=dict(sorted(counts.items())), servers=list(self.servers.values()),
                    tasks=[self.records[k] for k in sorted(self.records)])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".summary.", suffix=".json", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.path)


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


# --------------------------------------------------------------------------------------------- the run


def run_bench(args: argparse.Namespace) -> dict:
    """Run the benchmark described by parsed arguments; returns the summary body's counts and paths."""
    method, models = args.method, args.models
    if args.workflow:
        tpath = Path(args.workflow)
    else:
        tpath = template_path(method, models)
        if not tpath.is_file():
            raise BenchError(f"no template for --method {method} --models {models} ({tpath.relative_to(REPO_ROOT)});"
                             f" pass --workflow")
    template = load_template(tpath)
    settings = {"seed": args.seed, "n": args.n, "max_iterations": args.max_iterations, "lr": args.lr,
                "loss_threshold": args.loss_threshold, "frames": args.frames, "steps": args.steps,
                "cfg": args.cfg, "length": args.length}
    takes_prompt = check_settings(template, settings, tpath.name)
    size_policy = args.size or ("template" if models == "tiny" else "image")
    latent_size((64, 64), size_policy, (64, 64))  # refuse a malformed --size now
    config = config_hash(template, settings, size_policy)
    out_dir = Path(args.out) / method
    template_name = (tpath.resolve().relative_to(REPO_ROOT).as_posix() if tpath.resolve().is_relative_to(REPO_ROOT)
                     else tpath.name)
    summary = Summary(out_dir / "summary.json", {
        "method": method, "models": models, "template": template_name, "config": config,
        "settings": {k: v for k, v in settings.items() if v is not None}, "size": size_policy})

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
    for t in invalid:
        progress.note(f"invalid: {t.id}: {t.error}")
    if not takes_prompt:
        progress.note(f"note: {template_name} has no PrimitiveStringMultiline and no unwired teacher instruction, "
                      f"so {PROMPT_FILE} is not used")
    summary.write()
    result = {"summary": str(summary.path), "to_run": len(todo), "skipped": skipped, "invalid": len(invalid)}
    if not todo:
        progress.close()
        return dict(result, counts=_counts(summary))

    local = None
    try:
        urls = [u.rstrip("/") for u in args.server or []]
        if not urls:
            local = _start_local(args, progress)
            urls = [local.url]
        events: queue.Queue = queue.Queue()
        job = Job(method, template, settings, size_policy, config, out_dir, args.timeout, args.max_attempts,
                  args.request_timeout)
        work = TaskQueue(todo)
        workers = []
        for url in dict.fromkeys(urls):
            problem = check_server(url, template, args.request_timeout)
            summary.servers[url] = {"url": url, "status": "dropped" if problem else "ok", "error": problem,
                                    "tasks_done": 0}
            if problem:
                progress.note(f"server {url} {problem}; not used")
                continue
            work.add_worker(url)
            workers.append(Worker(url, job, work, events))
        if not workers:
            raise BenchError("no usable server: " + "; ".join(f"{u}: {s['error']}" for u, s in summary.servers.items()))
        for w in workers:
            w.start()
        _collect(workers, work, events, summary, progress, method)
        for w in workers:
            summary.servers[w.url]["tasks_done"] = w.done
        for task in work.drain():  # left when every server was lost
            record = base_record(task, method, "failed", config)
            record["error"] = "no server left to run it (every server was dropped)"
            summary.put(record)
        summary.write()
    finally:
        progress.close()
        if local is not None:
            local.stop()
            if not args.keep_server_dir:
                shutil.rmtree(local.base_dir, ignore_errors=True)
    return dict(result, counts=_counts(summary))


def _collect(workers, work: TaskQueue, events: queue.Queue, summary: Summary, progress: Progress, method: str):
    """Main thread: take worker events until every worker has ended; on Ctrl-C interrupt what runs."""
    try:
        while any(w.is_alive() for w in workers) or not events.empty():
            try:
                kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "record":
                summary.put(payload)
                line = f"{payload['status']} {payload['task']}"
                if payload["status"] == "done":
                    line += f" ({payload['seconds']:.1f} s on {payload['server']})"
                else:
                    line += f": {payload['error']}"
                progress.advance(line)
            elif kind == "retry":
                task, url, why = payload
                progress.note(f"retrying {task.id} (attempt {task.attempts} on {url} failed: {why})")
            elif kind == "dropped":
                url, why = payload
                summary.servers[url].update(status="dropped", error=why)
                summary.write()
                progress.note(f"dropped server {url}: {why}")
    except KeyboardInterrupt:
        work.stop()
        for w in workers:
            w._interrupt_current()
        summary.write()
        raise


def _counts(summary: Summary) -> dict:
    return dict(collections.Counter(r.get("status") for r in summary.records.values()))


def _start_local(args, progress: Progress) -> LocalComfy:
    if args.models == "tiny":
        from .demo import ensure_tiny_models

        models_dir = args.models_dir or ensure_tiny_models()
    else:
        models_dir = args.models_dir
        if models_dir is None:
            raise BenchError("--models wan22 without --server needs --models-dir: a ComfyUI models folder holding "
                             "the real model files (or start ComfyUI yourself and pass --server)")
    base = Path(tempfile.mkdtemp(prefix="tto-bench-server-"))
    server = _LocalServer(host_dir=args.comfyui, base_dir=base, models_dir=models_dir,
                          cpu=(args.local_device == "cpu"))
    progress.note(f"starting a local ComfyUI ({args.local_device}) in {base}")
    server.start(timeout=300)
    progress.note(f"local ComfyUI ready at {server.url} ({server.start_seconds:.1f} s)")
    return server


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tto-bench", description="Run benchmark tasks (first_frame.png + prompt.txt folders) through a method's "
        "workflow on one or more ComfyUI servers; write <out>/<method>/<task>.mp4 and summary.json.")
    p.add_argument("--tasks", required=True, help="folder of task folders (searched recursively)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--models", default="tiny", choices=MODEL_SETS,
                   help="which templates: tiny (the tiny demo models) or wan22 (real Wan 2.2 TI2V-5B file names)")
    p.add_argument("--workflow",
                   help="API-format template to use instead of workflows/api/bench/<method>_<models>.json")
    p.add_argument("--out", required=True, help="output folder; results go to <out>/<method>/")
    p.add_argument("--server", action="append", metavar="URL",
                   help="a ComfyUI server with this pack (repeat for several); default: start one locally")
    g = p.add_argument_group("method settings (default: the template's values)")
    g.add_argument("--seed", type=int, help="noise seed of every sampler / loop node")
    g.add_argument("--n", type=int, help="best_of_n: candidates per task")
    g.add_argument("--max-iterations", type=int, help="tto: iteration budget")
    g.add_argument("--lr", type=float, help="tto: LoRA learning rate")
    g.add_argument("--loss-threshold", type=float, help="tto: stop at this teacher loss")
    g.add_argument("--frames", type=int, help="tto, best_of_n: frames K shown to the teacher")
    g.add_argument("--steps", type=int, help="sampling steps of the final video")
    g.add_argument("--cfg", type=float, help="classifier-free guidance")
    g.add_argument("--length", type=int, help="video length in frames (4n+1)")
    g.add_argument("--size", help="video size: image (the first frame's, rounded to multiples of 32 and capped at "
                                  "the template's pixel count; default for wan22), template (default for tiny) "
                                  "or WIDTHxHEIGHT")
    r = p.add_argument_group("running")
    r.add_argument("--timeout", type=float, default=3600, help="seconds one task may run before it is retried "
                                                                "elsewhere (default 3600)")
    r.add_argument("--request-timeout", type=float, default=60, help="seconds one HTTP request to a server may "
                   "take before the server counts as not answering (default 60)")
    r.add_argument("--max-attempts", type=int, default=3, help="attempts per task across servers (default 3)")
    r.add_argument("--force", action="store_true", help="run every task again, even those already done")
    r.add_argument("--limit", type=int, help="only the first N task folders (by id)")
    r.add_argument("--models-dir", help="models folder for the local server (default for tiny: the tiny models)")
    r.add_argument("--comfyui", help="ComfyUI folder for the local server (default: $TTO_COMFYUI or the one "
                                     "scripts/setup_env.sh builds)")
    r.add_argument("--local-device", choices=("cpu", "gpu"), default=None,
                   help="device of the local server (default: cpu for tiny, gpu for wan22)")
    r.add_argument("--keep-server-dir", action="store_true", help="keep the local server's working folder")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.local_device is None:
        args.local_device = "cpu" if args.models == "tiny" else "gpu"
    if args.max_attempts < 1:
        print("tto-bench: --max-attempts must be at least 1", file=sys.stderr)
        return 2
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
    return 1 if counts.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
