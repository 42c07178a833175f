"""Reward queries: what the teacher is asked about a predicted video, and how its answers become one loss.

A query is a yes/no question with the answer that means "the rule was followed" (almost always "Yes").
The teacher proposes one goal query and 1-3 process queries; users may edit, add or remove any of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Literal, Sequence

Kind = Literal["goal", "process"]
Answer = Literal["Yes", "No"]

MAX_PROCESS_QUERIES = 3


@dataclass(frozen=True)
class Query:
    text: str
    kind: Kind = "goal"
    weight: float = 1.0
    answer: Answer = "Yes"  # the answer that means the rule was followed

    def __post_init__(self):
        if not self.text.strip():
            raise ValueError("A query needs a question text.")
        if self.kind not in ("goal", "process"):
            raise ValueError(f"Query kind must be 'goal' or 'process', got {self.kind!r}.")
        if self.answer not in ("Yes", "No"):
            raise ValueError(f"Query answer must be 'Yes' or 'No', got {self.answer!r}.")
        if not self.weight > 0:
            raise ValueError(f"Query weight must be positive, got {self.weight}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Query":
        return cls(text=str(d["text"]), kind=d.get("kind", "goal"), weight=float(d.get("weight", 1.0)),
                   answer=d.get("answer", "Yes"))


def require_queries(queries) -> list[Query]:
    """The queries as a list, or a ValueError when there are none: nothing can be graded without a question."""
    queries = list(queries or ())
    if not queries:
        raise ValueError("The query list is empty: the teacher needs at least one yes/no question to grade a "
                         "video (in ComfyUI, connect RewardQuery or TeacherAnalyze to 'queries').")
    return queries


def combine_losses(losses, queries: Sequence[Query], goal_weight: float = 0.5):
    """L = goal_weight * L_goal + (1 - goal_weight) * L_process, each a weight-averaged mean over its queries.

    With only goal (or only process) queries the total is that group's mean. Works on tensors or floats.
    """
    queries = require_queries(queries)
    if len(losses) != len(queries):
        raise ValueError(f"{len(losses)} losses for {len(queries)} queries.")

    def group_mean(kind):
        idx = [i for i, q in enumerate(queries) if q.kind == kind]
        if not idx:
            return None
        total_w = sum(queries[i].weight for i in idx)
        return sum(losses[i] * (queries[i].weight / total_w) for i in idx)

    goal, process = group_mean("goal"), group_mean("process")
    if goal is None:
        return process
    if process is None:
        return goal
    return goal_weight * goal + (1.0 - goal_weight) * process


# --------------------------------------------------------------------------------------------------
# Asking the teacher for queries, and reading what comes back.

QUERY_REQUEST = """You are checking whether a generated video follows a task.
Task instruction: {instruction}
The image is the first frame of the video.
Propose supervision questions on the processes and final objective of this task.
Write exactly one goal question about the final state, and one to three process questions about rules that must hold throughout the video.
Phrase every question so that the answer "Yes" means the task was done correctly.
Answer with JSON only, in this form:
{{"goal": "By the end of the video, ...?", "process": ["Does ...?", "Does ...?"]}}"""


def build_query_request(instruction: str) -> str:
    return QUERY_REQUEST.format(instruction=instruction.strip())


REWRITE_REQUEST = """Task instruction for a video generation model: {instruction}
The image is the first frame of the video.
Rewrite the instruction as one explicit prompt for the video model: describe the objects, the exact motion
and every rule it must respect, step by step, in plain sentences. Answer with the prompt only."""


def build_rewrite_request(instruction: str) -> str:
    return REWRITE_REQUEST.format(instruction=instruction.strip())


def clean_rewrite(reply: str) -> str | None:
    """The rewritten prompt without fences, labels or quotes; None when nothing usable is left."""
    text = _strip_fences(reply or "").strip()
    text = re.sub(r"^\s*(rewritten\s+)?prompt\s*:\s*", "", text, flags=re.I).strip().strip('"').strip()
    words = re.findall(r"[A-Za-z]{2,}", text)
    return text if len(words) >= 4 else None


@dataclass
class QueryProposal:
    queries: list[Query]
    source: Literal["teacher", "fallback"]
    notes: list[str] = field(default_factory=list)
    raw: str = ""

    def to_dict(self) -> dict:
        return {"queries": [q.to_dict() for q in self.queries], "source": self.source, "notes": self.notes,
                "raw": self.raw}


def fallback_queries(instruction: str) -> list[Query]:
    """Instruction-derived queries for when the teacher gives nothing usable (the paper's generic variant)."""
    task = instruction.strip().rstrip(".!?") or "the task"
    return [
        Query(f"By the end of the video, has the following been accomplished: {task}?", "goal"),
        Query(f"Does the video follow every rule stated in this instruction: {task}?", "process"),
        Query("Do the objects stay intact and move continuously, without vanishing, splitting or teleporting?",
              "process"),
    ]


_GOAL_KEYS = ("goal", "goal_query", "goal_question", "final", "final_goal", "objective", "goal_queries",
              "goal_questions")
_PROCESS_KEYS = ("process", "process_queries", "process_questions", "processes", "rules", "constraints")
_VIOLATION = re.compile(
    r"^(does|do|did|is|are|was|were|has|have)\b.*\b(touch(es|ed)?|collid(e|es|ed)|hit(s)?|cross(es|ed)?|"
    r"overlap(s|ped)?|pass(es)? through|go(es)? through|leave(s)?|exit(s)?|disappear(s|ed)?|vanish(es|ed)?|"
    r"split(s)?|break(s)?|fall(s)? off|teleport(s|ed)?)\b", re.I)
_KEEPS_RULE = re.compile(r"\b(avoid|avoids|without|not|never|no longer|stay|stays|remain|remains|intact)\b", re.I)


def _strip_fences(text: str) -> str:
    fenced = re.findall(r"```(?:json|JSON)?\s*(.*?)```", text, flags=re.S)
    return "\n".join(fenced) if fenced else text


def _repair_json(s: str) -> str:
    s = s.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    s = re.sub(r",\s*([}\]])", r"\1", s)  # trailing commas
    s = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", s)))
    if '"' not in s and "'" in s:
        s = s.replace("'", '"')
    return s


def _json_candidates(text: str) -> Iterable:
    """Every balanced {...} or [...] span that parses (after light repair), outermost first."""
    for opener, closer in (("{", "}"), ("[", "]")):
        for start in [m.start() for m in re.finditer(re.escape(opener), text)]:
            depth, in_str, esc = 0, False, False
            for i in range(start, len(text)):
                c = text[i]
                if in_str:
                    esc = (c == "\\") and not esc
                    if c == '"' and not esc:
                        in_str = False
                    continue
                if c == '"':
                    in_str = True
                elif c == opener:
                    depth += 1
                elif c == closer:
                    depth -= 1
                    if depth == 0:
                        span = text[start:i + 1]
                        for attempt in (span, _repair_json(span)):
                            try:
                                yield json.loads(attempt)
                                break
                            except json.JSONDecodeError:
                                continue
                        break


def _as_items(value) -> list:
    """A question field may be a string, a list of strings, or a list of {"question": ..., "expected": ...}."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    items = []
    for v in value if isinstance(value, list) else []:
        if isinstance(v, str):
            items.append((v, None))
        elif isinstance(v, dict):
            text = next((v[k] for k in ("question", "query", "text", "q") if isinstance(v.get(k), str)), None)
            if text:
                expected = v.get("expected", v.get("answer", v.get("expected_answer")))
                items.append((text, expected))
    return items


def _from_json(obj) -> tuple[list, list] | None:
    if isinstance(obj, list):  # a list of {"type": "goal"|"process", "question": ...}
        goals, procs = [], []
        for v in obj:
            if isinstance(v, dict):
                kind = str(v.get("type", v.get("kind", "process"))).lower()
                (goals if kind.startswith("goal") or kind.startswith("final") else procs).extend(_as_items(v))
        return (goals, procs) if goals or procs else None
    if not isinstance(obj, dict):
        return None
    lowered = {str(k).lower().strip(): v for k, v in obj.items()}
    for wrapper in ("queries", "questions"):
        if isinstance(lowered.get(wrapper), (dict, list)):
            return _from_json(lowered[wrapper])
    goals = [i for k in _GOAL_KEYS for i in _as_items(lowered.get(k))]
    procs = [i for k in _PROCESS_KEYS for i in _as_items(lowered.get(k))]
    return (goals, procs) if goals or procs else None


def _from_lines(text: str) -> tuple[list, list] | None:
    goals, procs = [], []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip()
        m = re.match(r"^(goal|final|objective|process|rule)[^:]*:\s*(.+)$", line, flags=re.I)
        if m:
            (goals if m.group(1).lower() in ("goal", "final", "objective") else procs).append((m.group(2), None))
        elif line.endswith("?") and len(line) > 8:
            (procs if goals else goals).append((line, None))
    return (goals, procs) if goals or procs else None


def _clean_question(text: str) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip().strip('"').strip()
    text = re.sub(r"^(q\d*|question\s*\d*)\s*[:.)-]\s*", "", text, flags=re.I)
    if text and not text.endswith("?"):
        text = text.rstrip(".!") + "?"
    return text


def _expected_answer(text: str, expected, notes: list[str]) -> Answer:
    if isinstance(expected, bool):
        return "Yes" if expected else "No"
    if isinstance(expected, str) and expected.strip().lower() in ("no", "false", "n"):
        return "No"
    if isinstance(expected, str) and expected.strip().lower() in ("yes", "true", "y"):
        return "Yes"
    if _VIOLATION.search(text) and not _KEEPS_RULE.search(text):
        notes.append(f"'{text}' reads as asking about a violation; its target answer is 'No'.")
        return "No"
    return "Yes"


def parse_query_proposal(text: str, instruction: str) -> QueryProposal:
    """Read the teacher's reply into 1 goal + 1..3 process queries; never raises.

    Accepts JSON with extra prose, code fences, trailing commas, single quotes, alternative key names,
    plain "Goal: ... / Process: ..." lines, or bare questions. Extra goals become process queries, extra
    process queries are dropped, a missing part is filled from the instruction; every such fix is noted.
    """
    notes: list[str] = []
    body = _strip_fences(text or "")
    parsed = next((r for r in map(_from_json, _json_candidates(body)) if r), None) or _from_lines(body) or ([], [])
    seen: set[str] = set()

    def build(items, kind):
        out = []
        for raw_text, expected in items:
            q = _clean_question(raw_text)
            if len(q) < 6 or q.lower() in seen:
                continue
            seen.add(q.lower())
            out.append(Query(q, kind, 1.0, _expected_answer(q, expected, notes)))
        return out

    goals, procs = build(parsed[0], "goal"), build(parsed[1], "process")
    fallback = fallback_queries(instruction)
    if not goals and not procs:
        notes.append("The teacher's reply held no usable questions; queries were derived from the instruction.")
        return QueryProposal(fallback, "fallback", notes, text or "")
    if not goals:
        notes.append("No goal question came back; the goal was derived from the instruction.")
        goals = [fallback[0]]
    if len(goals) > 1:
        notes.append(f"{len(goals)} goal questions came back; the first is the goal, the others count as process.")
        procs = [Query(q.text, "process", q.weight, q.answer) for q in goals[1:]] + procs
        goals = goals[:1]
    if len(procs) > MAX_PROCESS_QUERIES:
        notes.append(f"{len(procs)} process questions came back; the first {MAX_PROCESS_QUERIES} are kept.")
        procs = procs[:MAX_PROCESS_QUERIES]
    if not procs:
        notes.append("No process question came back; one was derived from the instruction.")
        procs = [fallback[1]]
    return QueryProposal(goals + procs, "teacher", notes, text or "")


def queries_to_json(queries: Sequence[Query]) -> str:
    return json.dumps([q.to_dict() for q in queries], indent=2)


def queries_from_json(text: str) -> list[Query]:
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("queries", [])
    return [Query.from_dict(d) for d in data]
