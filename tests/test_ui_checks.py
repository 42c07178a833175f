"""The checks on UI workflows (widget values after a load, node sizes, overlaps), on graphs written out by
hand and on what a frontend reports for them (no browser)."""

from __future__ import annotations

from tto_runner.frontend import cut_off_nodes, widget_mismatches
from tto_runner.workflow_format import overlapping_nodes


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


def placed(node_id, x, y, w, h):
    return {"id": node_id, "type": "VAELoader", "pos": [x, y], "size": [w, h]}


def test_nodes_saved_smaller_than_the_frontend_needs_are_cut_off():
    given = graph(placed(1, 0, 0, 320, 200), placed(2, 0, 300, 320, 500), placed(3, 0, 900, 200, 500))
    loaded = [{"id": 1, "needs": [210, 466]}, {"id": 2, "needs": [210, 466]}, {"id": 3, "needs": [323.9, 132]}]
    assert [(n["id"], n["needs"]) for n in cut_off_nodes(given, loaded)] == [(1, [210, 466]), (3, [323.9, 132])]


def test_overlapping_nodes_count_the_title_bar():
    apart = graph(placed(1, 0, 30, 100, 100), placed(2, 0, 180, 100, 100), placed(3, 120, 30, 100, 100))
    assert overlapping_nodes(apart) == []
    # node 2's title bar (30 px above its position) reaches into node 1
    assert overlapping_nodes(graph(placed(1, 0, 30, 100, 100), placed(2, 50, 150, 100, 100))) == [(1, 2)]
    assert overlapping_nodes(graph(placed(1, 0, 0, 100, 100), placed(2, 50, 50, 100, 100),
                                   placed(3, 500, 0, 10, 10))) == [(1, 2)]
