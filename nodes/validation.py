"""Every widget value a node receives is checked against the node's own schema, in one place.

API clients can send anything; the UI's dropdowns protect nobody. ComfyUI 0.3.75 checks the min/max of
numbers but not the options of V3 combos, and lets NaN through. So a node's `validate_inputs` names the
inputs the host does not check well (combos, file and folder names, free text) and returns
`verdict(...)`: the prompt is then refused before anything runs, with a message that says what to send
instead. Naming an input there turns the host's own check of that input off, so the check here covers
everything the host's would. Widget values that arrive through links are only known at run time:
`check_widgets` repeats every check at the start of `execute`.
"""

from __future__ import annotations

import math

from comfy_api.latest import io


def _widget_specs(node_class) -> dict:
    return {spec.id: spec for spec in node_class.define_schema().inputs}


def _problem(name: str, value, spec) -> str | None:
    if isinstance(spec, io.Combo.Input):
        if value not in spec.options:
            return f"{name}: {value!r} is not a valid choice; use one of: {', '.join(map(str, spec.options))}."
    elif isinstance(spec, (io.Float.Input, io.Int.Input)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}."
        if not math.isfinite(value):
            return f"{name} must be a finite number, got {value!r}."
        low, high = spec.min, spec.max
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{name} must lie between {low} and {high}, got {value}."
    return None


def problems(node_class, values: dict) -> list[str]:
    """What is wrong with the given widget values (None: not known yet, e.g. linked)."""
    specs = _widget_specs(node_class)
    found = []
    for name, value in values.items():
        if name in specs and value is not None:
            problem = _problem(name, value, specs[name])
            if problem:
                found.append(problem)
    return found


def verdict(node_class, *extra_problems: str | None, **values) -> bool | str:
    """For `validate_inputs`: True, or every problem in one message."""
    found = [p for p in extra_problems if p] + problems(node_class, values)
    return " ".join(found) if found else True


def check_widgets(node_class, values: dict) -> None:
    """At the start of `execute`: raise a ValueError naming every bad widget value among `values` (other keys,
    such as sockets, are ignored)."""
    found = problems(node_class, values)
    if found:
        raise ValueError(" ".join(found))


def non_empty(name: str, text) -> str | None:
    if text is not None and not str(text).strip():
        return f"{name} is empty: write the text the node needs."
    return None
