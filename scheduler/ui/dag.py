"""The shape of a run's DAG as the run page draws it: boxes and the edges between them.

A map is one box (its items, known only at run time, are counted into it), and a crowd of
plain nodes with the same operator, the same upstream and the same downstream nodes (what
`total([leaf(i) for i in range(n)])` builds) is folded into one box too, so a run of any
size draws as a handful of boxes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FOLD_AT = 6  # this many look-alike nodes fold into one box


@dataclass
class Box:
    name: str  # the node a link opens: the task, the map (its gather), a group's first member
    operator: str
    kind: str  # "task" | "map" | "group"
    members: tuple[str, ...]  # the nodes it stands for (a map's items are found by map_parent)


@dataclass
class Shape:
    boxes: list[Box]
    edges: list[tuple[int, int]]  # (upstream box, downstream box), each once
    index: dict[str, int] = field(default_factory=dict)  # node name -> its box (maps by their name)


def from_plan_text(text: str) -> Shape:
    """The shape of a plan (flowlib.plan.Plan as JSON), read without building Plan objects."""
    data = json.loads(text)
    operators = {key: op.get("qualname", key) for key, op in data.get("operators", {}).items()}
    nodes = []
    for node in data.get("nodes", []):
        refs: list[str] = []
        for value in node.get("inputs", {}).values():
            _refs(value, refs)
        for item in node.get("items") or ():
            _refs(item, refs)
        kind = "map" if node.get("kind") == "map" else "task"
        nodes.append((node["name"], operators.get(node["op"], node["op"]), kind, list(dict.fromkeys(refs))))
    return fold(nodes)


def from_rows(rows: Iterable[Any], edges: Iterable[tuple[str, str]]) -> Shape:
    """The shape from recorded node rows (name, operator, map_parent) and edges, for a run
    without a stored plan."""
    rows = list(rows)
    maps = {row.map_parent for row in rows if row.map_parent}
    names = {row.name for row in rows if not row.map_parent}
    upstream: dict[str, list[str]] = defaultdict(list)
    for src, dst in edges:
        if src in names and dst in names and src not in upstream[dst]:
            upstream[dst].append(src)
    return fold(
        (row.name, row.operator, "map" if row.name in maps else "task", upstream[row.name])
        for row in rows
        if not row.map_parent
    )


def _refs(value: Any, found: list[str]) -> None:
    if not isinstance(value, dict):
        return
    if "ref" in value:
        found.append(value["ref"][0])
    for key in ("list", "tuple"):
        for item in value.get(key) or ():
            _refs(item, found)
    for pair in value.get("dict") or ():
        _refs(pair[1], found)


def fold(nodes: Iterable[tuple[str, str, str, list[str]]]) -> Shape:
    """Boxes from (name, operator, kind, upstream names) in build order, look-alikes folded."""
    nodes = list(nodes)
    known = {name for name, *_ in nodes}
    downstream: dict[str, list[str]] = defaultdict(list)
    for name, _, _, ups in nodes:
        for up in ups:
            downstream[up].append(name)
    crowds: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for name, operator, kind, ups in nodes:
        if kind == "task":
            key = (operator, tuple(sorted(ups)), tuple(sorted(downstream[name])))
            crowds[key].append(name)
    groups = {members[0]: tuple(members) for members in crowds.values() if len(members) >= FOLD_AT}
    folded = {name: head for head, members in groups.items() for name in members}
    boxes: list[Box] = []
    index: dict[str, int] = {}
    for name, operator, kind, _ in nodes:
        head = folded.get(name)
        if head is not None and head != name:
            index[name] = index[head]
            continue
        index[name] = len(boxes)
        if head is not None:
            boxes.append(Box(name, operator, "group", groups[name]))
        else:
            boxes.append(Box(name, operator, kind, (name,)))
    edges = {
        (index[up], index[name])
        for name, _, _, ups in nodes
        for up in ups
        if up in known and index[up] != index[name]
    }
    return Shape(boxes, sorted(edges), index)
