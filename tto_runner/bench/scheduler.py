"""Scheduling tasks on servers: the shared queue, one worker thread per server, which errors are the
server's and which the task's, retries, and the main thread's loop over the workers' events.

A task whose server fails (connection lost, server died, timeout) goes back to the queue for another
server, and a server that no longer answers a health check is dropped. A task whose prompt fails on its own
(rejected at validation, or a node raised) is tried at most twice, then recorded as failed. Anything else
(a local problem such as a video that cannot be written under --out) fails the task at once and leaves the
server alone.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import websocket

from ..client import ComfyClient, PromptFailed, PromptInterrupted, PromptRejected, server_answers
from .records import base_record, read_reports, summarise_reports
from .tasks import Task, task_slug
from .templates import LATENT_NODES, fill_template, output_node

TASK_FAILURE_ATTEMPTS = 2   # a prompt that fails for its own reasons is tried at most this often

# Errors of the connection to a server: HTTP (requests), the websocket, sockets refused / reset (the client
# raises ServerConnectionError, a ConnectionError), and timeouts (the client's own and the sockets').
# Other OSErrors are local: a full disk under --out is no reason to give a task to another server.
SERVER_ERRORS = (requests.RequestException, websocket.WebSocketException, ConnectionError, TimeoutError)


class LocalIOError(RuntimeError):
    """A file on this machine could not be read or written; the server is not to blame."""


def is_server_error(error: BaseException) -> bool:
    return isinstance(error, SERVER_ERRORS)


def describe_error(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if is_server_error(error) and not isinstance(error, TimeoutError):
        text = f"server error: {type(error).__name__}: {text}"
    elif isinstance(error, OSError) and not is_server_error(error):
        text = f"local error (not the server's): {type(error).__name__}: {text}"
    return text[:2000]


def check_server(url: str, template: dict, timeout: float = 60) -> str | None:
    """None when the server answers and has every node class the template uses, else the problem."""
    if not server_answers(url, timeout=min(5.0, timeout)):
        return "does not answer GET /system_stats"
    try:
        info = requests.get(url.rstrip("/") + "/object_info", timeout=timeout)
        info.raise_for_status()
        classes = info.json()
    except (requests.RequestException, ValueError) as e:
        return f"does not answer GET /object_info: {type(e).__name__}: {e}"
    missing = sorted({v["class_type"] for v in template.values()} - set(classes))
    if missing:
        return f"lacks node types {', '.join(missing)} (install or update this pack and its dependencies there)"
    return None


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
    task (and every retry, every dropped server) to `events` as (kind, payload)."""

    def __init__(self, url: str, job: Job, tasks: TaskQueue, events: queue.Queue):
        super().__init__(name=f"tto-bench {url}", daemon=True)
        self.url = url.rstrip("/")
        self.job = job
        self.tasks = tasks
        self.events = events
        self.client = ComfyClient(self.url, timeout=job.request_timeout)
        self.current_prompt: str | None = None   # the prompt id while one of ours is on the server
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
                self._retry(task, e)
            else:
                self._failed(task, e, started)
        except (PromptInterrupted, *SERVER_ERRORS) as e:
            # The server's trouble, not the task's: interrupted by someone, connection lost, timed out.
            self._log(task, e, started)
            if isinstance(e, TimeoutError):
                self.interrupt_current()
            if not isinstance(e, PromptInterrupted) and not server_answers(
                    self.url, timeout=min(5.0, self.job.request_timeout)):
                self.dropped = f"stopped answering during task {task.id}: {describe_error(e)}"
                self.events.put(("dropped", (self.url, self.dropped)))
            if task.attempts < self.job.max_attempts:
                self._retry(task, e)
            else:
                self._failed(task, e, started)
        except Exception as e:  # the task's own or a local problem (no video in the outputs, disk full): record it
            task.task_failures += 1
            self._log(task, e, started)
            self._failed(task, e, started)
        else:
            self.done += 1
            self.tasks.finish(task)
            self.events.put(("record", record))
        finally:
            self.current_prompt = None

    def _retry(self, task: Task, error: BaseException) -> None:
        task.avoid.add(self.url)
        self.tasks.retry(task)
        self.events.put(("retry", (task, self.url, describe_error(error))))

    def _log(self, task: Task, error: BaseException, started: float) -> None:
        task.attempt_log.append({"server": self.url, "error": describe_error(error),
                                 "seconds": round(time.monotonic() - started, 2)})

    def _failed(self, task: Task, error: BaseException, started: float) -> None:
        record = base_record(task, self.job.method, "failed", self.job.config)
        record.update(error=describe_error(error), server=self.url, seconds=round(time.monotonic() - started, 2))
        if isinstance(error, PromptFailed) and error.traceback:
            record["traceback"] = error.traceback[-4000:]
        self.tasks.finish(task)
        self.events.put(("record", record))

    def interrupt_current(self) -> None:
        """Take our prompt off the server: out of the queue if it waits there, interrupted if it runs."""
        prompt_id = self.current_prompt
        if prompt_id:
            try:
                self.client.delete_from_queue([prompt_id])
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
        self.current_prompt = prompt_id
        history = self.client.wait(prompt_id, timeout=job.timeout)["history"]
        save = output_node(prompt)
        videos = [f for f in self.client.output_files(history) if f["node_id"] == save]
        if not videos:
            raise RuntimeError(f"the SaveVideo node ({save}) listed no file in the prompt's outputs")
        save_video(self.client.view(videos[0]), job.out_dir / f"{task.id}.mp4")
        record = base_record(task, job.method, "done", job.config)
        reports = read_reports(prompt, history)
        summarise_reports(record, reports, prompt)
        latent = next((v["inputs"] for v in prompt.values() if v["class_type"] in LATENT_NODES), {})
        record.update(server=self.url, seconds=round(time.monotonic() - started, 2), prompt_id=prompt_id,
                      video=f"{task.id}.mp4", size=[latent["width"], latent["height"]] if "width" in latent else None,
                      length=latent.get("length"), reports=reports or None)
        return record


def save_video(data: bytes, dest: Path) -> None:
    """Write atomically (a partial file never has the final name); a failure is a LocalIOError."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LocalIOError(f"the video could not be saved as {dest} (a local problem, not the server's): "
                           f"{type(e).__name__}: {e}") from e


def run_workers(workers: list[Worker], work: TaskQueue, events: queue.Queue, on_record, on_retry, on_dropped) -> None:
    """Main thread: start the workers and pass their events on until every worker has ended; on Ctrl-C stop
    handing out tasks, take what runs off the servers, and re-raise."""
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers) or not events.empty():
            try:
                kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "record":
                on_record(payload)
            elif kind == "retry":
                on_retry(*payload)
            elif kind == "dropped":
                on_dropped(*payload)
    except KeyboardInterrupt:
        work.stop()
        for w in workers:
            w.interrupt_current()
        raise
