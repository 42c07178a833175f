"""Start and stop a headless ComfyUI server with this pack installed as a custom node.

    with LocalComfy(base_dir="/tmp/comfy-work") as server:
        client = ComfyClient(server.url)
        ...

The server is an ordinary ComfyUI process (`main.py --cpu ...`, or on the GPU with cpu=False) working in
`base_dir`, which gets the usual ComfyUI folders and a symlink `custom_nodes/comfyui-vlm-teacher` -> this
repository.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .client import server_answers
from .paths import REPO_ROOT, cache_root

PACK_NAME = "comfyui-vlm-teacher"

# ComfyUI's standard model folders (folder_paths.py) and where they live under a models folder, plus the
# two folders this pack uses: `LLM` (teacher checkpoints) and `conditioning` (saved text conditioning).
MODEL_FOLDERS: dict[str, list[str]] = {
    "checkpoints": ["checkpoints"],
    "configs": ["configs"],
    "loras": ["loras"],
    "vae": ["vae"],
    "text_encoders": ["text_encoders", "clip"],
    "diffusion_models": ["unet", "diffusion_models"],
    "clip_vision": ["clip_vision"],
    "style_models": ["style_models"],
    "embeddings": ["embeddings"],
    "diffusers": ["diffusers"],
    "vae_approx": ["vae_approx"],
    "controlnet": ["controlnet", "t2i_adapter"],
    "gligen": ["gligen"],
    "upscale_models": ["upscale_models"],
    "latent_upscale_models": ["latent_upscale_models"],
    "hypernetworks": ["hypernetworks"],
    "photomaker": ["photomaker"],
    "classifiers": ["classifiers"],
    "model_patches": ["model_patches"],
    "audio_encoders": ["audio_encoders"],
    "LLM": ["LLM"],
    "conditioning": ["conditioning"],
}

_WORK_FOLDERS = ("custom_nodes", "models", "input", "output", "temp", "user")
_running: "set[LocalComfy]" = set()


class ServerStartError(RuntimeError):
    """The server did not come up, or came up without this pack."""


def default_host_dir() -> Path:
    """The ComfyUI source folder: $TTO_COMFYUI, else <cache root>/comfyui, which scripts/setup_env.sh builds
    (or checks and reuses)."""
    env = os.environ.get("TTO_COMFYUI")
    if env:
        return Path(env).expanduser().resolve()
    script = REPO_ROOT / "scripts" / "setup_env.sh"
    subprocess.run(["bash", str(script)], check=True, stdout=subprocess.DEVNULL)
    return (cache_root() / "comfyui").resolve()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _has_flag(host_dir: Path, flag: str) -> bool:
    cli_args = host_dir / "comfy" / "cli_args.py"
    try:
        return f'"{flag}"' in cli_args.read_text(encoding="utf-8")
    except OSError:
        return False


class LocalComfy:
    """A ComfyUI subprocess with this pack linked into its custom_nodes folder.

    host_dir:   ComfyUI source folder (has main.py). Default: see default_host_dir().
    base_dir:   working folder; gets custom_nodes/, models/, input/, output/, temp/, user/ and comfyui.log.
    models_dir: optional existing models folder, added (first in line) through an extra-model-paths YAML.
    port:       0 picks a free port.
    python:     interpreter that runs main.py (must have ComfyUI's requirements).
    extra_args: more command-line arguments for main.py.
    check_pack: after start, raise if the log shows that this pack failed to import.
    cpu:        run ComfyUI with --cpu (False: on the machine's GPU).
    """

    def __init__(
        self,
        host_dir: str | os.PathLike | None = None,
        base_dir: str | os.PathLike | None = None,
        models_dir: str | os.PathLike | None = None,
        port: int = 0,
        python: str | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        host: str = "127.0.0.1",
        check_pack: bool = True,
        cpu: bool = True,
    ):
        self.host_dir = Path(host_dir).expanduser().resolve() if host_dir else default_host_dir()
        if not (self.host_dir / "main.py").is_file():
            raise ServerStartError(f"no ComfyUI main.py in {self.host_dir}")
        if base_dir is None:
            import tempfile

            base_dir = tempfile.mkdtemp(prefix="comfy-base-")
        self.base_dir = Path(base_dir).expanduser().resolve()
        self.models_dir = Path(models_dir).expanduser().resolve() if models_dir else None
        self.requested_port = int(port)
        self.port = int(port)
        self.host = host
        self.python = python or sys.executable
        self.extra_args = list(extra_args)
        self.check_pack = check_pack
        self.cpu = cpu
        self.log_path = self.base_dir / "comfyui.log"
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None  # how long the last start() took
        self._log_offset = 0

    # ------------------------------------------------------------------ layout

    def prepare(self) -> None:
        """Create the working folders, link the pack and write the model-paths YAML (idempotent)."""
        for name in _WORK_FOLDERS:
            (self.base_dir / name).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / PACK_NAME
        if link.is_symlink() or link.exists():
            if link.resolve() != REPO_ROOT:
                raise ServerStartError(f"{link} exists and is not a link to {REPO_ROOT}")
        else:
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        if self.models_dir is not None:
            self._write_model_paths()

    @property
    def model_paths_yaml(self) -> Path:
        return self.base_dir / "extra_model_paths.yaml"

    def _write_model_paths(self) -> None:
        # JSON strings are valid YAML double-quoted scalars, so no YAML library is needed.
        lines = ["# written by tto_runner.LocalComfy", "tto_models:",
                 f"  base_path: {json.dumps(str(self.models_dir))}", "  is_default: true"]
        for key, subdirs in MODEL_FOLDERS.items():
            lines.append(f"  {key}: {json.dumps(chr(10).join(subdirs))}")
        self.model_paths_yaml.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def command(self) -> list[str]:
        cmd = [
            self.python, "main.py",
            *(["--cpu"] if self.cpu else []),
            "--listen", self.host,
            "--port", str(self.port),
            "--base-directory", str(self.base_dir),
            "--database-url", "sqlite:///:memory:",
            "--disable-auto-launch",
        ]
        if _has_flag(self.host_dir, "--preview-method"):
            cmd += ["--preview-method", "none"]
        if self.models_dir is not None:
            cmd += ["--extra-model-paths-config", str(self.model_paths_yaml)]
        return cmd + self.extra_args

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 120) -> "LocalComfy":
        if self.running:
            return self
        self.prepare()
        attempts = 3 if self.requested_port == 0 else 1
        for attempt in range(attempts):
            if self.requested_port == 0 and (attempt > 0 or self.port == 0):
                self.port = free_port(self.host)
            try:
                self._start_once(timeout)
                break
            except ServerStartError as e:
                # Another process may have taken the free port between our probe and ComfyUI's bind.
                if attempt + 1 < attempts and "address already in use" in str(e).lower():
                    continue
                raise
        if self.check_pack:
            problem = self.pack_import_problem()
            if problem:
                self.stop()
                raise ServerStartError(f"ComfyUI started but {PACK_NAME} failed to import:\n{problem}")
        return self

    def _start_once(self, timeout: float) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            self._log_offset = log.tell()
            log.write(f"=== tto_runner: starting {' '.join(self.command())} (cwd {self.host_dir})\n")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        t0 = time.monotonic()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.host_dir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        finally:
            log.close()
        _running.add(self)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                _running.discard(self)
                raise ServerStartError(f"ComfyUI exited with code {code} during start-up; log tail:\n"
                                       + self.log_tail())
            if server_answers(self.url, tries=1, timeout=2):
                self.start_seconds = time.monotonic() - t0
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"ComfyUI did not answer {self.url}/system_stats within {timeout:.0f} s;"
                                       f" log tail:\n" + self.log_tail())
            time.sleep(0.2)

    def stop(self, timeout: float = 15) -> None:
        proc, self.proc = self.proc, None
        _running.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def restart(self, timeout: float = 120) -> "LocalComfy":
        """Stop and start again on the same port (a fresh process: caches and queue are gone)."""
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> "LocalComfy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ log

    def log_text(self) -> str:
        """The whole log file (all starts of this base_dir)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def current_log(self) -> str:
        """The log of the latest start only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.current_log().splitlines()[-lines:])

    def pack_import_problem(self) -> str | None:
        """The log text explaining why this pack failed to import, or None when it imported."""
        return self.import_problem(PACK_NAME)

    def import_problem(self, module_name: str) -> str | None:
        """The log text explaining why custom node `module_name` (its folder name under custom_nodes/)
        failed to import in the latest start, or None when it did not fail.

        ComfyUI prints a traceback, then `Cannot import <path> module for custom nodes: <error>` (or `Error
        while calling comfy_entrypoint in <path>`, `Skip <path> ...`), and in its import-time table a line
        `<t> seconds (IMPORT FAILED): <path>`.
        """
        text = self.current_log()
        lines = text.splitlines()
        mark = str(self.base_dir / "custom_nodes" / module_name)
        failed = [i for i, line in enumerate(lines) if _names_module(line, mark) and (
            "IMPORT FAILED" in line or "Cannot import" in line or "comfy_entrypoint" in line
            or line.lstrip().startswith("Skip "))]
        if not failed:
            return None
        keep: set[int] = set()
        for i in failed:
            keep.add(i)
            if "Cannot import" in lines[i]:  # with the traceback logged just before it
                j = i - 1
                while j >= 0 and i - j < 400 and not lines[j].startswith("Traceback (most recent call last)"):
                    j -= 1
                if j >= 0 and lines[j].startswith("Traceback"):
                    keep.update(range(j, i))
        return "\n".join(lines[k] for k in sorted(keep))

    def import_failures(self) -> list[str]:
        """Every `IMPORT FAILED` line of the latest start (core extras with missing deps included)."""
        return [line.strip() for line in self.current_log().splitlines() if "IMPORT FAILED" in line]

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalComfy({self.url}, base_dir={str(self.base_dir)!r}, {state})"


def _names_module(line: str, path: str) -> bool:
    """Whether `line` mentions the module folder `path` itself (not a longer name sharing its prefix)."""
    at = line.find(path)
    while at >= 0:
        end = at + len(path)
        if end == len(line) or not (line[end].isalnum() or line[end] in "-_."):
            return True
        at = line.find(path, at + 1)
    return False


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        try:
            server.stop(timeout=5)
        except Exception:
            pass
