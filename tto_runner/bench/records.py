"""Per-task records and the summary file: the record every task starts from, what the nodes' reports add to
it, the baseline's cost counted from its sampler, `<out>/<method>/summary.json`, and whether a task is
already done (resuming)."""

from __future__ import annotations

import collections
import datetime
import json
import os
import tempfile
from pathlib import Path

from tto_engine.cost import add_costs, sample_cost

from .tasks import BenchError, Task

# Nodes whose first ui text is a JSON report the summary reads.
REPORT_NODES = ("TeacherAnalyze", "TTOLoop", "BestOfNSample", "TeacherRewritePrompt")
SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")


def base_record(task: Task, method: str, status: str, config: str | None) -> dict:
    return {"task": task.id, "method": method, "status": status, "error": task.error if status == "invalid" else None,
            "iterations": None, "stop_reason": None, "final_loss": None, "scores": None, "cost": None,
            "server": None, "seconds": None, "attempts": task.attempts, "attempt_log": list(task.attempt_log),
            "config": config}


def read_reports(prompt: dict, history: dict) -> dict:
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


def summarise_reports(record: dict, reports: dict, prompt: dict) -> None:
    """Fill iterations, stop_reason, losses, scores and cost from the node reports."""
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
    record["cost"] = add_costs(costs) if costs else sampler_cost(prompt)


def sampler_cost(prompt: dict) -> dict | None:
    """The cost of a workflow whose nodes report none (a plain KSampler baseline): one reasoner pass per
    sampling step, two when cfg is not 1 (conditional and unconditional). None without a sampler."""
    forwards = sum(sample_cost(int(node["inputs"].get("steps", 0)), float(node["inputs"].get("cfg", 1.0)))
                   ["reasoner_forward"] for node in prompt.values() if node["class_type"] in SAMPLER_NODES)
    if not forwards:
        return None
    return {"reasoner_forward": forwards, "reasoner_backward": 0, "teacher_forward": 0, "teacher_backward": 0,
            "teacher_generate": 0, "counted_from": "sampler settings"}


def counts_as_done(record: dict | None, config: str, video: Path) -> bool:
    """A task is skipped on a re-run only when its record says done under the same configuration and its
    video is still there."""
    return bool(record and record.get("status") == "done" and record.get("config") == config and video.is_file())


class Summary:
    """<out>/<method>/summary.json, rewritten atomically after every change. Records of an earlier run are
    read back, so a re-run knows what is done."""

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
        except (OSError, ValueError, AttributeError):
            pass  # no summary yet, or not one of ours: start afresh

    def is_done(self, task: Task, config: str, out_dir: Path) -> bool:
        return counts_as_done(self.records.get(task.id), config, out_dir / f"{task.id}.mp4")

    def counts(self) -> dict:
        """{status: number of tasks}."""
        return dict(sorted(collections.Counter(r.get("status") for r in self.records.values()).items()))

    def put(self, record: dict) -> None:
        self.records[record["task"]] = record
        self.write()

    def write(self) -> None:
        body = dict(self.header, updated=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    counts=self.counts(), servers=list(self.servers.values()),
                    tasks=[self.records[k] for k in sorted(self.records)])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".summary.", suffix=".json", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.path)


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def run_means(records, config: str | None = None) -> dict:
    """Means over the done tasks (of `config` when given): `seconds` per task (upload to download), the
    reports' `wall_s`, and TTO's `equal_wall_samples` (None where no task has one)."""
    done = [r for r in records if r.get("status") == "done" and (config is None or r.get("config") == config)]

    def numbers(get) -> list:
        values = [get(r) for r in done]
        return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]

    return {"tasks": len(done),
            "seconds": _mean(numbers(lambda r: r.get("seconds"))),
            "wall_s": _mean(numbers(lambda r: (r.get("cost") or {}).get("wall_s"))),
            "equal_wall_samples": _mean(numbers(lambda r: (r.get("cost") or {}).get("equal_wall_samples")))}


def equal_wall_n(run: Path) -> tuple[int, dict]:
    """N for Best-of-N at TTO's wall time, read from a finished TTO run (`<out>/tto`, its summary.json, or
    `<out>`): the mean `equal_wall_samples` of its done tasks under the summary's configuration, rounded (at
    least 1). Returns N and the means it came from."""
    path = Path(run)
    if path.is_dir():
        path = path / "summary.json" if (path / "summary.json").is_file() or not (path / "tto").is_dir() else \
            path / "tto" / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BenchError(f"--n-from {run}: no readable tto-bench summary ({type(e).__name__}: {e})") from None
    if not isinstance(summary, dict) or summary.get("method") != "tto":
        raise BenchError(f"--n-from {run}: {path} is not the summary of a tto run (its method is "
                         f"{summary.get('method') if isinstance(summary, dict) else None!r})")
    means = run_means(summary.get("tasks") or [], summary.get("config"))
    if means["equal_wall_samples"] is None:
        raise BenchError(f"--n-from {run}: no done task in {path} reports cost.equal_wall_samples")
    return max(1, round(means["equal_wall_samples"])), means
