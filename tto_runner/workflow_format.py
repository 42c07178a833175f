"""Convert between ComfyUI's two workflow formats with the server's /object_info as the schema.

API format: {id: {"class_type", "inputs": {name: value | [source_id, slot]}}} (what POST /prompt takes).
UI format (version 0.4): nodes with positional `widgets_values`, sockets, and a link table. Widget values
are positional in the order the node declares its inputs, with one extra value after a seed's
"control after generate" and after an upload widget.
"""

from __future__ import annotations

from collections import defaultdict

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
_UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload")

# Layout of written UI files, in canvas pixels. Rows follow LiteGraph's: 20 px per socket row, 24 per widget.
_NODE_WIDTH, _COLUMN_GAP, _ROW_GAP, _TITLE_HEIGHT = 340, 60, 50, 30
_SOCKET_ROW, _WIDGET_ROW, _TEXT_BOX, _UPLOAD_PREVIEW = 20, 24, 100, 260  # preview: room for a square image


def _inputs(info: dict) -> list[tuple[str, str, dict, bool]]:
    """(name, type, options, required) in declaration order."""
    out = []
    order = info.get("input_order") or {}
    for section in ("required", "optional"):
        specs = info.get("input", {}).get(section, {})
        names = order.get(section) or list(specs)
        for name in names:
            spec = specs[name]
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, kind, opts, section == "required"))
    return out


def _is_widget(kind, opts) -> bool:
    return kind in WIDGET_TYPES and not opts.get("forceInput")


def _extra_values(opts) -> list:
    """Values the frontend stores after a widget's own value."""
    if opts.get("control_after_generate"):
        return ["fixed"]
    if any(opts.get(flag) for flag in _UPLOAD_FLAGS):
        return ["image"]
    return []


def is_link(value) -> bool:
    """An API-format input that is a link: [source node id, output slot]."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and isinstance(value[0], str)


def api_to_ui(api: dict, object_info: dict, titles: dict | None = None) -> dict:
    """Lay the graph out left to right by depth and write it in UI format."""
    ids = {key: int(key) for key in api}
    depth: dict[str, int] = {}

    def node_depth(key):
        if key not in depth:
            sources = [v[0] for v in api[key]["inputs"].values() if is_link(v)]
            depth[key] = 1 + max((node_depth(s) for s in sources), default=-1)
        return depth[key]

    for key in api:
        node_depth(key)
    next_y: dict[int, int] = defaultdict(lambda: 40)
    links, nodes = [], []
    outgoing: dict[tuple[str, int], list[int]] = defaultdict(list)
    for key in sorted(api, key=lambda k: (depth[k], ids[k])):
        for name, value in api[key]["inputs"].items():
            if is_link(value):
                link_id = len(links) + 1
                src_info = object_info[api[value[0]]["class_type"]]
                links.append([link_id, ids[value[0]], value[1], ids[key], name, src_info["output"][value[1]]])
                outgoing[(value[0], value[1])].append(link_id)
    order = 0
    for key in sorted(api, key=lambda k: (depth[k], ids[k])):
        node = api[key]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, kind, opts, required in _inputs(info):
            value = node["inputs"].get(name)
            linked = is_link(value)
            if _is_widget(kind, opts):
                placeholder = opts.get("default", "" if kind == "STRING" else None)
                if linked:
                    inputs.append({"name": name, "type": kind, "link": _link_id(links, ids[key], name),
                                   "widget": {"name": name}})
                    widgets.append(placeholder)
                else:  # an optional widget left out of the API graph keeps a placeholder (None: "not set")
                    widgets.append(value if name in node["inputs"] else placeholder)
                widgets.extend(_extra_values(opts))
            else:
                inputs.append({"name": name, "type": kind, "link": _link_id(links, ids[key], name) if linked else None})
        outputs = [{"name": out_name, "type": out_type, "links": outgoing.get((key, slot), []), "slot_index": slot}
                   for slot, (out_name, out_type) in enumerate(zip(info["output_name"], info["output"]))]
        column, height = depth[key], _node_height(info)
        ui_node = {"id": ids[key], "type": node["class_type"],
                   "pos": [40 + (_NODE_WIDTH + _COLUMN_GAP) * column, next_y[column]], "size": [_NODE_WIDTH, height],
                   "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                   "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}
        if titles and key in titles:
            ui_node["title"] = titles[key]
        next_y[column] += _TITLE_HEIGHT + height + _ROW_GAP
        order += 1
        nodes.append(ui_node)
    for link in links:  # the link table names the target slot by index
        target = next(n for n in nodes if n["id"] == link[3])
        link[4] = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == link[4])
    return {"last_node_id": max(ids.values()), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def overlapping_nodes(ui: dict) -> list[tuple[int, int]]:
    """Pairs of node ids whose boxes, title bar included, overlap on the canvas."""
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - _TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui.get("nodes") or []]
    return [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]


def _node_height(info: dict) -> int:
    """Room for every socket row and widget, so that no widget is cut off and nodes do not overlap."""
    specs = _inputs(info)
    sockets = sum(not _is_widget(kind, opts) for _, kind, opts, _ in specs)
    height = max(sockets, len(info["output"])) * _SOCKET_ROW + 6
    widgets = [(kind, opts) for _, kind, opts, _ in specs if _is_widget(kind, opts)]
    for kind, opts in widgets:
        height += _TEXT_BOX if kind == "STRING" and opts.get("multiline") else _WIDGET_ROW
        height += _WIDGET_ROW * len(_extra_values(opts))  # "control after generate", or the upload button
        if any(opts.get(flag) for flag in _UPLOAD_FLAGS):
            height += _UPLOAD_PREVIEW
    return height + (8 if widgets else 0)


def _link_id(links, target_id, input_name):
    return next(link[0] for link in links if link[3] == target_id and link[4] == input_name)


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """Read a UI-format workflow back into API format (muted and bypassed nodes are left out)."""
    link_source = {link[0]: (str(link[1]), link[2]) for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) != 0:
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise KeyError(f"Node type '{node['type']}' is not installed on this server.")
        values = list(node.get("widgets_values") or [])
        sockets = {inp["name"]: inp.get("link") for inp in node.get("inputs", [])}
        inputs = {}
        for name, kind, opts, required in _inputs(info):
            if _is_widget(kind, opts):
                value = values.pop(0) if values else opts.get("default")
                for _ in _extra_values(opts):
                    if values:
                        values.pop(0)
                link = sockets.get(name)
                if link is not None:
                    inputs[name] = list(link_source[link])
                elif value is not None or required:
                    inputs[name] = value
            elif sockets.get(name) is not None:
                inputs[name] = list(link_source[sockets[name]])
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api
