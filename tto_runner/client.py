"""A small client for ComfyUI's standard HTTP + websocket API.

    client = ComfyClient("http://127.0.0.1:8188")
    prompt_id, entry = client.run(api_prompt)          # queue, wait for it, fetch its history entry
    for f in client.output_files(entry):
        client.download(f, "out/")

Execution messages (`executing`, `progress`, `execution_error`, ...) go only to the websocket whose
clientId was sent with the prompt, so this client queues every prompt under its own `client_id` and
listens under that same id.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
import websocket  # websocket-client


class ComfyError(RuntimeError):
    """Base class of the errors below."""


class ServerConnectionError(ComfyError, ConnectionError):
    """The websocket to the server could not be opened or broke (refused, reset, unreachable)."""


class PromptRejected(ComfyError):
    """POST /prompt answered 400: the prompt did not validate. `body` is the server's JSON answer
    (`error` with type/message/details, and `node_errors` keyed by node id)."""

    def __init__(self, body: dict, status: int = 400):
        self.body = body
        self.status = status
        self.error = body.get("error") if isinstance(body, dict) else None
        self.node_errors = body.get("node_errors", {}) if isinstance(body, dict) else {}
        super().__init__(f"prompt rejected ({status}): {self.describe()}")

    def describe(self) -> str:
        parts = []
        err = self.error
        if isinstance(err, dict):
            parts.append(": ".join(x for x in (err.get("message"), err.get("details")) if x))
        elif err:
            parts.append(str(err))
        for node_id, info in (self.node_errors or {}).items():
            for e in info.get("errors", []):
                what = ": ".join(x for x in (e.get("message"), e.get("details")) if x)
                parts.append(f"node {node_id} ({info.get('class_type')}): {what}")
        return "; ".join(parts) or json.dumps(self.body)[:2000]


class PromptFailed(ComfyError):
    """The prompt ran and a node raised. `data` is the `execution_error` payload: prompt_id, node_id,
    node_type, exception_message, exception_type, traceback (list of str), current_inputs, ..."""

    def __init__(self, data: dict):
        self.data = data
        self.prompt_id = data.get("prompt_id")
        self.node_id = data.get("node_id")
        self.node_type = data.get("node_type")
        self.exception_message = data.get("exception_message", "")
        self.exception_type = data.get("exception_type", "")
        tb = data.get("traceback") or []
        self.traceback = "".join(tb) if isinstance(tb, list) else str(tb)
        super().__init__(f"node {self.node_id} ({self.node_type}) failed: "
                         f"{self.exception_type}: {self.exception_message}".rstrip())


class PromptInterrupted(ComfyError):
    """The prompt was interrupted (POST /interrupt). `data` is the `execution_interrupted` payload."""

    def __init__(self, data: dict):
        self.data = data
        self.prompt_id = data.get("prompt_id")
        self.node_id = data.get("node_id")
        self.node_type = data.get("node_type")
        super().__init__(f"prompt interrupted at node {self.node_id} ({self.node_type})")


def server_answers(url: str, tries: int = 3, timeout: float = 5.0, pause: float = 1.0) -> bool:
    """The health check: GET /system_stats answers 200, within `tries` attempts `pause` seconds apart."""
    for attempt in range(tries):
        try:
            if requests.get(url.rstrip("/") + "/system_stats", timeout=timeout).status_code == 200:
                return True
        except requests.RequestException:
            pass
        if attempt + 1 < tries:
            time.sleep(pause)
    return False


class ComfyClient:
    """Talks to one ComfyUI server. `progress[prompt_id]` holds every `progress` message seen for a
    prompt ({"value", "max", "node", "prompt_id"}) in arrival order."""

    def __init__(self, url: str, client_id: str | None = None, timeout: float = 30):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout  # per HTTP request
        self.session = requests.Session()
        self.progress: dict[str, list[dict]] = {}

    # ------------------------------------------------------------------ HTTP helpers

    def _get(self, path: str, **params) -> requests.Response:
        r = self.session.get(self.url + path, params=params or None, timeout=self.timeout)
        r.raise_for_status()
        return r

    def _post(self, path: str, payload: Any = None, **kw) -> requests.Response:
        r = self.session.post(self.url + path, json=payload, timeout=self.timeout, **kw)
        r.raise_for_status()
        return r

    def system_stats(self) -> dict:
        return self._get("/system_stats").json()

    def object_info(self, node_class: str | None = None) -> dict:
        return self._get("/object_info" + (f"/{node_class}" if node_class else "")).json()

    def models(self, folder: str) -> list[str]:
        """GET /models/<folder>: file names (relative paths) in one model folder, e.g. "vae" or "LLM"."""
        return self._get(f"/models/{folder}").json()

    def queue_state(self) -> dict:
        """GET /queue: {"queue_running": [...], "queue_pending": [...]}."""
        return self._get("/queue").json()

    def history(self, prompt_id: str | None = None) -> dict:
        """The history entry of one prompt ({} while it has none), or the whole history."""
        if prompt_id is None:
            return self._get("/history").json()
        return self._get(f"/history/{prompt_id}").json().get(prompt_id, {})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt (only if it is `prompt_id`, when given)."""
        self._post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        """Remove prompts that wait in the queue (a running one stays: interrupt it)."""
        self._post("/queue", {"delete": list(prompt_ids)})

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        self._post("/free", {"unload_models": unload_models, "free_memory": free_memory})

    # ------------------------------------------------------------------ prompts

    def queue(self, prompt: dict, client_id: str | None = None, extra_data: dict | None = None) -> str:
        """POST /prompt with an API-format prompt; returns its prompt_id. Raises PromptRejected on 400."""
        payload: dict[str, Any] = {"prompt": prompt, "client_id": client_id or self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        r = self.session.post(self.url + "/prompt", json=payload, timeout=self.timeout)
        if r.status_code == 400:
            try:
                body = r.json()
            except ValueError:
                body = {"error": r.text}
            raise PromptRejected(body, r.status_code)
        r.raise_for_status()
        return r.json()["prompt_id"]

    def _ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws", urlencode({"clientId": client_id}), ""))

    def _connect(self, client_id: str | None = None) -> websocket.WebSocket:
        url = self._ws_url(client_id or self.client_id)
        try:
            return websocket.create_connection(url, timeout=self.timeout)
        except OSError as e:  # socket errors come through unwrapped: say they are the connection's
            raise ServerConnectionError(f"cannot open the websocket {url}: {type(e).__name__}: {e}") from e

    def wait(self, prompt_id: str, timeout: float = 600,
             on_message: Callable[[str, dict], None] | None = None, client_id: str | None = None) -> dict:
        """Block until `prompt_id` has finished; return a summary.

        Returns {"prompt_id", "status": "success", "executed": {node_id: ui output}, "progress": [...],
        "events": [(type, data), ...], "history": history entry}; `events` are the websocket messages
        about this prompt that arrived while listening. Raises PromptFailed, PromptInterrupted, or
        TimeoutError. `on_message(type, data)` sees every JSON message on the socket.
        """
        ws = self._connect(client_id)
        try:
            return self._listen(ws, prompt_id, timeout, on_message)
        finally:
            ws.close()

    def _listen(self, ws: websocket.WebSocket, prompt_id: str, timeout: float,
                on_message: Callable[[str, dict], None] | None) -> dict:
        progress = self.progress.setdefault(prompt_id, [])
        summary: dict[str, Any] = {"prompt_id": prompt_id, "status": None, "executed": {},
                                   "progress": progress, "events": [], "history": {}}
        deadline = time.monotonic() + timeout
        # The prompt may have finished before the socket was open: history tells (and raises on failure).
        if self._finished_from_history(prompt_id) is not None:
            return self._success(summary, deadline)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s")
            ws.settimeout(min(left, 5.0))
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                # A quiet socket: a long node, or the end was missed; history tells.
                if self._finished_from_history(prompt_id) is not None:
                    return self._success(summary, deadline)
                continue
            except OSError as e:
                raise ServerConnectionError(f"the websocket to {self.url} broke: {type(e).__name__}: {e}") from e
            if not isinstance(raw, str):
                continue  # binary frames: previews
            msg = json.loads(raw)
            kind, data = msg.get("type"), msg.get("data") or {}
            if on_message is not None:
                on_message(kind, data)
            if kind == "progress" and data.get("prompt_id") in (None, prompt_id):
                progress.append({k: data.get(k) for k in ("value", "max", "node", "prompt_id")})
            if data.get("prompt_id") != prompt_id:
                continue  # status / progress_state without an id, or messages of other prompts
            summary["events"].append((kind, data))
            if kind == "executed":
                summary["executed"][data.get("node")] = data.get("output")
            elif kind == "execution_error":
                raise PromptFailed(data)
            elif kind == "execution_interrupted":
                raise PromptInterrupted(data)
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
                return self._success(summary, deadline)

    def _success(self, summary: dict, deadline: float) -> dict:
        """Attach the history entry; it is stored right after `execution_success`, so poll briefly."""
        prompt_id = summary["prompt_id"]
        entry = self.history(prompt_id)
        until = min(deadline, time.monotonic() + 10)
        while not entry.get("status") and time.monotonic() < until:
            time.sleep(0.05)
            entry = self.history(prompt_id)
        summary["status"] = "success"
        summary["history"] = entry
        for node_id, output in (entry.get("outputs") or {}).items():
            summary["executed"].setdefault(node_id, output)
        return summary

    def _finished_from_history(self, prompt_id: str) -> dict | None:
        """The history entry if the prompt completed successfully, None while it has not finished;
        raises PromptFailed / PromptInterrupted if it ended that way."""
        entry = self.history(prompt_id)
        status = entry.get("status") if entry else None
        if not status:
            return None
        for kind, data in status.get("messages", []):
            if kind == "execution_error":
                raise PromptFailed(data)
            if kind == "execution_interrupted":
                raise PromptInterrupted(data)
        if status.get("completed") or status.get("status_str") == "success":
            return entry
        raise PromptFailed({"prompt_id": prompt_id, "exception_message": f"prompt ended with status {status}"})

    def run(self, prompt: dict, timeout: float = 600,
            on_message: Callable[[str, dict], None] | None = None) -> tuple[str, dict]:
        """Queue a prompt, wait for it, and return (prompt_id, history entry). The websocket is opened
        before queueing, so no message of the prompt is missed."""
        ws = self._connect()
        try:
            prompt_id = self.queue(prompt)
            summary = self._listen(ws, prompt_id, timeout, on_message)
        finally:
            ws.close()
        return prompt_id, summary["history"]

    # ------------------------------------------------------------------ files

    def upload_image(self, path: str | Path, subfolder: str = "", overwrite: bool = True,
                     type: str = "input") -> str:
        """POST /upload/image; returns the name to put in a LoadImage `image` input."""
        path = Path(path)
        data = {"type": type, "overwrite": "true" if overwrite else "false"}
        if subfolder:
            data["subfolder"] = subfolder
        with open(path, "rb") as f:
            r = self.session.post(self.url + "/upload/image", files={"image": (path.name, f)},
                                  data=data, timeout=self.timeout)
        r.raise_for_status()
        body = r.json()
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    @staticmethod
    def output_files(history_entry: dict) -> list[dict]:
        """Every file listed in a history entry's outputs (images, gifs, videos, audio, ... whatever key):
        dicts with filename, subfolder, type (plus node_id and the output key)."""
        files = []
        for node_id, outputs in (history_entry.get("outputs") or {}).items():
            for key, items in (outputs or {}).items():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item:
                        files.append({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                      "type": item.get("type", "output"), "node_id": node_id, "key": key})
        return files

    def view(self, file: dict) -> bytes:
        params = {"filename": file["filename"], "subfolder": file.get("subfolder", ""),
                  "type": file.get("type", "output")}
        return self._get("/view", **params).content

    def download(self, file: dict, dest_dir: str | Path) -> Path:
        """GET /view for one output file; saves it under dest_dir with its own name."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / Path(file["filename"]).name
        dest.write_bytes(self.view(file))
        return dest

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "ComfyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
