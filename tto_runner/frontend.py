"""Load a UI-format workflow into the real ComfyUI frontend, in headless Chromium, and report what it sees.

    from tto_runner.frontend import check_workflow_in_browser
    report = check_workflow_in_browser(server.url, "example_workflows/foo.json", "foo.png")
    assert not report["missing_node_types"] and not report["page_errors"]

It drives Debian's Chromium (`/usr/bin/chromium`, see scripts/install_browser.sh) with the `playwright`
package; no browser is downloaded. The page may only reach the ComfyUI server: every other request is
aborted and listed in `blocked_requests`.

How the frontend (comfyui-frontend-package 1.32.x, and 1.58.x where noted) exposes what we check:
- `window.app` (the ComfyApp) and `window.LiteGraph` are set once the app is set up; node types known to
  the page are the keys of `LiteGraph.registered_node_types`.
- `app.loadGraphData(workflow)` loads a UI workflow. Unknown node types become red placeholder nodes
  (`has_errors`), are passed to every extension's `afterConfigureGraph(missingNodeTypes)` hook, and
  open the "This workflow has missing nodes" dialog (dialog key `global-missing-nodes`) while the setting
  `Comfy.Workflow.ShowMissingNodesWarning` is on. 1.58 calls the same hook but lists missing types in
  its error panel instead of that dialog.
- A saved node without widgets has `widgets_values: []` in 1.32 and no such key in 1.58.
- `app.graphToPrompt()` turns the loaded graph into an API prompt, as the Queue button would.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# Settings served to the page (the server's own settings file is left alone): skip the first-run
# template browser, and always show the missing-nodes dialog.
_SETTING_OVERRIDES = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
}

# Settings for thumbnails: only the graph, drawn in full detail, without the canvas's own overlays and
# without marking model files this server does not have (the workflows name the real checkpoints).
THUMBNAIL_SETTINGS = {
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Graph.CanvasMenu": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.ErrorSystem.ShowMissingModels": False,
    "Comfy.Workflow.ShowMissingMediaWarning": False,
}

_READY_JS = """() => !!(window.app && window.LiteGraph && app.graph && app.canvas
    && Object.keys(LiteGraph.registered_node_types || {}).length > 0
    && app.extensionManager && app.extensionManager.workflow
    && app.extensionManager.workflow.activeWorkflow)"""

_INSTALL_PROBE_JS = """() => {
    if (window.__ttoProbe) return;
    window.__ttoProbe = {missing: []};
    app.registerExtension({
        name: "tto_runner.probe",
        afterConfigureGraph(missing) {
            window.__ttoProbe.missing.push((missing || []).map(m => typeof m === "string" ? m : m.type));
        },
    });
}"""

_LOAD_JS = """async (wf) => {
    window.__ttoProbe.missing = [];
    // Close dialogs left by a previous load: an open dialog is only raised again, with its old content.
    try {
        const pinia = document.querySelector("#vue-app").__vue_app__.config.globalProperties.$pinia;
        const store = pinia._s.get("dialog");
        for (const d of [...store.dialogStack]) store.closeDialog({key: d.key});
    } catch (e) { /* older/newer frontends: the dialog check below still reads the DOM */ }
    let error = null;
    try {
        await app.loadGraphData(wf);
    } catch (e) {
        error = String(e && e.stack || e);
    }
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    return error;
}"""

_COLLECT_JS = """async (types) => {
    const registered = {};
    for (const t of types) registered[t] = t in LiteGraph.registered_node_types;
    let dialogs = [];
    try {  // the dialog store, through the Vue app's pinia instance
        const pinia = document.querySelector("#vue-app").__vue_app__.config.globalProperties.$pinia;
        dialogs = pinia.state.value.dialog.dialogStack.map(d => ({
            key: d.key, props: JSON.parse(JSON.stringify(d.contentProps || {}))}));
    } catch (e) { dialogs = null; }
    const dialogText = Array.from(document.querySelectorAll(".p-dialog")).map(d => d.innerText);
    const toasts = Array.from(document.querySelectorAll(".p-toast-message")).map(d => d.innerText);
    const nodes = app.graph.nodes.map(n => ({id: n.id, type: n.type, has_errors: !!n.has_errors,
                                              title: n.title, needs: Array.from(n.computeSize())}));
    const serialized = app.graph.serialize();
    let apiPrompt = null, promptError = null;
    try { apiPrompt = (await app.graphToPrompt()).output; } catch (e) { promptError = String(e); }
    return {registered, dialogs, dialogText, toasts, nodes, serialized, apiPrompt, promptError,
            missingHook: window.__ttoProbe.missing, linkCount: (serialized.links || []).length,
            frontendVersion: window.__COMFYUI_FRONTEND_VERSION__ || null};
}"""


# Show only the canvas (focus mode), hide whatever still sits over its corners (the button that leaves
# focus mode), and zoom so that the whole graph fills the canvas with a small margin.
_FRAME_GRAPH_JS = """async (margin) => {
    if (!window.__ttoFocus) {
        await app.extensionManager.command.execute("Workspace.ToggleFocusMode");
        window.__ttoFocus = true;
        await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    }
    const canvas = app.canvas.canvas, rect = canvas.getBoundingClientRect();
    for (const [x, y] of [[rect.right - 20, rect.top + 20], [rect.left + 20, rect.top + 20],
                          [rect.right - 20, rect.bottom - 20], [rect.left + 20, rect.bottom - 20]]) {
        for (const el of document.elementsFromPoint(x, y)) {
            if (el === canvas || el.contains(canvas)) break;
            el.style.visibility = "hidden";
        }
    }
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const node of app.graph.nodes) {
        const top = node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT;
        x0 = Math.min(x0, node.pos[0]); y0 = Math.min(y0, top);
        x1 = Math.max(x1, node.pos[0] + node.size[0]); y1 = Math.max(y1, node.pos[1] + node.size[1]);
    }
    const ds = app.canvas.ds;
    const scale = Math.min((rect.width - 2 * margin) / (x1 - x0), (rect.height - 2 * margin) / (y1 - y0));
    ds.scale = scale;
    ds.offset[0] = (rect.width / scale - (x1 - x0)) / 2 - x0;
    ds.offset[1] = (rect.height / scale - (y1 - y0)) / 2 - y0;
    app.canvas.setDirty(true, true);
}"""


def _workflow_node_types(workflow: dict) -> list[str]:
    types: list[str] = []
    for node in workflow.get("nodes") or []:
        types.append(node.get("type"))
    for sub in (workflow.get("definitions") or {}).get("subgraphs") or []:
        for node in sub.get("nodes") or []:
            types.append(node.get("type"))
    subgraph_ids = {s.get("id") for s in (workflow.get("definitions") or {}).get("subgraphs") or []}
    out: list[str] = []
    for t in types:
        if t and t not in subgraph_ids and t not in out:  # a subgraph instance's type is its definition id
            out.append(t)
    return out


def _load_workflow(workflow: str | Path | dict) -> dict:
    if isinstance(workflow, dict):
        return workflow
    return json.loads(Path(workflow).read_text(encoding="utf-8"))


class FrontendSession:
    """One headless Chromium page on the ComfyUI frontend; check() any number of workflows in it."""

    def __init__(self, server_url: str, chromium: str = CHROMIUM, viewport: tuple[int, int] = (1600, 900),
                 timeout: float = 60, settings: dict | None = None):
        self.server_url = server_url.rstrip("/")
        self.settings = {**_SETTING_OVERRIDES, **(settings or {})}  # served to the page in place of the user's
        self.chromium = chromium
        self.viewport = viewport
        self.timeout = timeout
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.console_warnings: list[str] = []
        self.failed_requests: list[str] = []
        self.blocked_requests: list[str] = []
        self.load_seconds: float | None = None
        self._pw = self._browser = self._page = None
        self._marks = (0, 0, 0, 0, 0)  # what the previous check() already reported

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> "FrontendSession":
        if not Path(self.chromium).exists():
            raise FileNotFoundError(f"{self.chromium} not found: run scripts/install_browser.sh")
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(executable_path=self.chromium, args=CHROMIUM_ARGS,
                                                     headless=True)
            context = self._browser.new_context(viewport={"width": self.viewport[0],
                                                          "height": self.viewport[1]})
            context.route("**/*", self._route)
            page = context.new_page()
            page.set_default_timeout(self.timeout * 1000)
            page.on("pageerror", lambda e: self.page_errors.append(_error_text(e)))
            page.on("console", self._on_console)
            page.on("requestfailed", lambda r: self.failed_requests.append(f"{r.url} ({r.failure})"))
            page.on("response", lambda r: r.status >= 400 and self.failed_requests.append(f"{r.url} ({r.status})"))
            t0 = time.monotonic()
            page.goto(self.server_url + "/", wait_until="domcontentloaded")
            page.wait_for_function(_READY_JS, timeout=self.timeout * 1000)
            page.evaluate(_INSTALL_PROBE_JS)
            self.load_seconds = time.monotonic() - t0
            self._page = page
        except Exception:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._browser is not None:
            try:
                self._browser.close()
            except Exception:
                pass
        if self._pw is not None:
            self._pw.stop()
        self._pw = self._browser = self._page = None

    def __enter__(self) -> "FrontendSession":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def page(self):
        return self._page

    # ------------------------------------------------------------------ events

    def _route(self, route) -> None:
        request = route.request
        url = request.url
        if url.startswith(("data:", "blob:")):
            route.continue_()
            return
        target, own = urlsplit(url), urlsplit(self.server_url)
        if (target.scheme, target.netloc) not in ((own.scheme, own.netloc), ("ws", own.netloc)):
            self.blocked_requests.append(url)
            route.abort()
            return
        if request.method == "GET" and target.path in ("/api/settings", "/settings"):
            response = route.fetch()
            try:
                settings = response.json()
            except Exception:
                route.fulfill(response=response)
                return
            if isinstance(settings, dict):
                settings = {**settings, **self.settings}
            route.fulfill(response=response, json=settings)
            return
        route.continue_()

    def _on_console(self, message) -> None:
        text = message.text
        if message.type == "error":
            if text.startswith("Failed to load resource"):
                return  # the request itself is in failed_requests / blocked_requests, with its URL
            self.console_errors.append(text)
        elif message.type == "warning":
            self.console_warnings.append(text)

    # ------------------------------------------------------------------ checks

    def thumbnail(self, workflow: str | Path | dict, path: str | Path, width: int = 640, quality: int = 85) -> dict:
        """Load a UI workflow, frame the whole graph and save it as a JPEG `width` pixels wide. Open the
        session with settings=THUMBNAIL_SETTINGS for a clean picture. Returns the check() report of the load."""
        from PIL import Image

        report = self.check(workflow)
        self._page.evaluate(_FRAME_GRAPH_JS, 40)
        self._page.wait_for_timeout(500)  # a few frames drawn, images in nodes loaded
        with Image.open(io.BytesIO(self._page.screenshot())) as shot:
            height = round(shot.height * width / shot.width)
            shot.convert("RGB").resize((width, height), Image.LANCZOS).save(path, "JPEG", quality=quality,
                                                                            optimize=True)
        return report

    def registered_node_types(self) -> list[str]:
        return self._page.evaluate("() => Object.keys(LiteGraph.registered_node_types)")

    def check(self, workflow: str | Path | dict, screenshot_path: str | Path | None = None,
              node_types: Iterable[str] = ()) -> dict[str, Any]:
        """Load one UI workflow and report on it (see check_workflow_in_browser). Errors and requests are
        those since the previous check (the first check includes the page's start-up)."""
        wf = _load_workflow(workflow)
        marks = self._marks
        types = _workflow_node_types(wf)
        wanted = types + [t for t in node_types if t not in types]
        load_error = self._page.evaluate(_LOAD_JS, wf)
        info = self._page.evaluate(_COLLECT_JS, wanted)

        reported: list[str] = []
        for group in info["missingHook"] or []:
            reported += group
        for dialog in info["dialogs"] or []:
            if dialog["key"] == "global-missing-nodes":
                for m in dialog["props"].get("missingNodeTypes") or []:
                    reported.append(m if isinstance(m, str) else m.get("type"))
        unregistered = [t for t in types if not info["registered"].get(t)]
        missing = []
        for t in unregistered + reported:
            if t and t not in missing:
                missing.append(t)

        if screenshot_path is not None:
            Path(screenshot_path).parent.mkdir(parents=True, exist_ok=True)
            self._page.screenshot(path=str(screenshot_path))

        self._marks = (len(self.page_errors), len(self.console_errors), len(self.console_warnings),
                       len(self.failed_requests), len(self.blocked_requests))
        page_errors = self.page_errors[marks[0]:]
        if load_error:
            page_errors = page_errors + [f"app.loadGraphData threw: {load_error}"]
        return {
            "missing_node_types": missing,
            "missing_reported_by_app": sorted(set(t for t in reported if t)),
            "missing_dialog_shown": any(d["key"] == "global-missing-nodes" for d in info["dialogs"] or []),
            "page_errors": page_errors,
            "console_errors": self.console_errors[marks[1]:],
            "console_warnings": self.console_warnings[marks[2]:],
            "failed_requests": self.failed_requests[marks[3]:],
            "blocked_requests": self.blocked_requests[marks[4]:],
            "registered": info["registered"],
            "node_count": len(info["nodes"]),
            "link_count": info["linkCount"],
            "nodes": info["nodes"],
            "error_nodes": [n for n in info["nodes"] if n["has_errors"]],
            "cut_off_nodes": cut_off_nodes(wf, info["nodes"]),
            "widget_mismatches": widget_mismatches(wf, info["serialized"], missing),
            "dialogs": [d["key"] for d in info["dialogs"] or []],
            "dialog_text": info["dialogText"],
            "toasts": info["toasts"],
            "api_prompt": info["apiPrompt"],
            "api_prompt_error": info["promptError"],
            "screenshot": str(screenshot_path) if screenshot_path is not None else None,
            "frontend_version": info["frontendVersion"],
        }


def widget_mismatches(given: dict, serialized: dict, missing: list[str]) -> list[dict]:
    """Nodes whose widget values changed on load: too few or too many values, or a value the widget refused.

    Compared by meaning: a node without widgets may be saved with `widgets_values: []` or without the key
    (newer frontends, 1.58 among them, leave it out), and both mean the same. A node saved without the key
    states nothing, so it is not compared. `missing` node types are left out: they have no widgets to load.
    """
    after = {n.get("id"): n for n in serialized.get("nodes") or []}
    out = []
    for node in given.get("nodes") or []:
        if node.get("type") in missing or "widgets_values" not in node:
            continue
        loaded = after.get(node.get("id"))
        loaded_values = None if loaded is None else loaded.get("widgets_values")
        if loaded is None or (node["widgets_values"] or []) != (loaded_values or []):
            out.append({"id": node.get("id"), "type": node.get("type"), "given": node["widgets_values"],
                        "after_load": loaded_values})
    return out


def cut_off_nodes(given: dict, loaded_nodes: list[dict]) -> list[dict]:
    """Nodes saved smaller than the frontend needs to draw all their sockets and widgets (`needs`, from
    the node's computeSize()): the frontend keeps the saved size, so the rest is cut off or overlaps."""
    needs = {str(n["id"]): n["needs"] for n in loaded_nodes}
    out = []
    for node in given.get("nodes") or []:
        need, size = needs.get(str(node.get("id"))), node.get("size")
        if need and isinstance(size, list) and (size[0] < need[0] or size[1] < need[1]):
            out.append({"id": node.get("id"), "type": node.get("type"), "size": size, "needs": need})
    return out


def _error_text(error) -> str:
    stack = getattr(error, "stack", None)
    return stack or str(error)


def check_workflow_in_browser(server_url: str, workflow_path: str | Path | dict,
                              screenshot_path: str | Path | None, node_types: Iterable[str] = (),
                              timeout: float = 60, chromium: str = CHROMIUM) -> dict[str, Any]:
    """Open the ComfyUI frontend of `server_url` in headless Chromium, load a UI workflow with the app's
    own `loadGraphData`, screenshot the page, and report:

    missing_node_types   types used in the workflow that the page does not know, plus whatever the app
                         itself reported missing (afterConfigureGraph hook, missing-nodes dialog)
    page_errors          uncaught exceptions in the page (from start-up on) and a throwing loadGraphData
    console_errors       console.error messages (resource-load failures go to failed_requests instead)
    registered           {node type: registered in LiteGraph} for the workflow's types and `node_types`
    node_count           nodes in the loaded graph
    plus link_count, nodes, error_nodes, cut_off_nodes, widget_mismatches, dialogs, dialog_text, toasts,
    api_prompt (what the Queue button would send), frontend_version, failed_requests, blocked_requests,
    load_seconds.
    """
    with FrontendSession(server_url, chromium=chromium, timeout=timeout) as session:
        report = session.check(workflow_path, screenshot_path, node_types=node_types)
        report["load_seconds"] = session.load_seconds
        return report
