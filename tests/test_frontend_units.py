"""The frontend check's comparisons, on saved and reloaded graphs written out by hand (no browser)."""

from __future__ import annotations

from tto_runner.frontend import widget_mismatches


def graph(*nodes) -> dict:
    return {"nodes": [dict(node) for node in nodes]}


def node(node_id, node_type, *values, saved=True):
    out = {"id": node_id, "type": node_type}
    if saved:
        out["widgets_values"] = list(values)
    return out


def test_a_node_without_widgets_saved_as_empty_or_left_out_is_the_same():
    given = graph(node(1, "VAEDecode"), node(2, "ConditioningZeroOut", saved=False), node(3, "VAELoader", "vae.st"))
    reloaded_new = graph(node(1, "VAEDecode", saved=False), node(2, "ConditioningZeroOut", saved=False),
                         node(3, "VAELoader", "vae.st"))
    reloaded_old = graph(node(1, "VAEDecode"), node(2, "ConditioningZeroOut"), node(3, "VAELoader", "vae.st"))
    assert widget_mismatches(given, reloaded_new, missing=[]) == []
    assert widget_mismatches(given, reloaded_old, missing=[]) == []


def test_changed_dropped_or_lost_values_are_reported():
    given = graph(node(1, "KSampler", 7, "fixed", 4), node(2, "VAELoader", "vae.st"), node(3, "SaveImage", "out"),
                  node(4, "ImageInvert"))
    reloaded = graph(node(1, "KSampler", 7, "fixed"),  # a value dropped
                     node(2, "VAELoader", "other.st"),  # a value the widget refused and replaced
                     node(3, "SaveImage", saved=False),  # every value gone
                     node(4, "ImageInvert", "surprise"))  # values where the file had none
    assert [(m["id"], m["after_load"]) for m in widget_mismatches(given, reloaded, missing=[])] == [
        (1, [7, "fixed"]), (2, ["other.st"]), (3, None), (4, ["surprise"])]


def test_a_node_lost_on_load_is_reported_unless_its_type_is_missing():
    given = graph(node(1, "VAELoader", "vae.st"), node(2, "NoSuchNode", 3))
    assert widget_mismatches(given, graph(), missing=["NoSuchNode"]) == [
        {"id": 1, "type": "VAELoader", "given": ["vae.st"], "after_load": None}]
