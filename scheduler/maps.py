"""Map nodes at run time: the item nodes of a map over a future, and the list a map gathers."""

from __future__ import annotations

import json
from typing import Any

from flowlib.artifacts import INLINE_LIMIT, Reader
from flowlib.dag import Node, Ref
from flowlib.store import MANIFEST, MANIFEST_VERSION, pack
from scheduler.recorder import Recorder
from scheduler.store.blobs import Blobs
from scheduler.tasks import NodeState


def gather(name: str, items: list[NodeState], store: Any, recorder: Recorder) -> tuple[dict[str, Any], bool]:
    """The outputs of map `name` (a manifest of its items' outputs, stored), and whether all were cached."""
    refs = [item.outputs["return"] for item in items]  # type: ignore[index]
    payload = json.dumps([[r["digest"], r["serializer"]] for r in refs], separators=(",", ":")).encode()
    ref, data = pack(MANIFEST, MANIFEST_VERSION, payload)
    inline = [digest for r in refs for digest in r.get("inline") or ()]
    if ref.size <= INLINE_LIMIT:
        recorder.keep_inline(name, {ref.digest: data}, ref)
        inline.append(ref.digest)
    else:
        store.write(ref, data)
        recorder.artifact(name, ref.to_json())
    outputs = {"return": {**ref.to_json(), "elements": [r["digest"] for r in refs], "inline": inline}}
    return outputs, bool(items) and all(item.status == "cached" for item in items)


def expand(node: Node, states: dict[str, NodeState], store: Any, blobs: Blobs) -> list[Node]:
    """A map over a future: one item node per element of the list its upstream produced."""
    source = node.inputs[node.map_param]  # type: ignore[index]
    assert isinstance(source, Ref)
    output = (states[source.node].outputs or {})[source.output]
    elements = output.get("elements")
    if elements is None:
        elements = Reader(store, blobs).elements(output["digest"])
        output["elements"] = elements
    fixed = {k: v for k, v in node.inputs.items() if k != node.map_param}
    return [
        Node(
            f"{node.name}[{index}]",
            node.operator,
            {node.map_param: Ref(source.node, source.output, index), **fixed},  # type: ignore[dict-item]
            node.call_site,
        )
        for index in range(len(elements))
    ]


def item_rows(
    items: list[dict[str, Any]], parent: NodeState, position: int, **columns: Any
) -> list[dict[str, Any]]:
    """The node rows of a map's items (each a dict of its columns), placed after the run's nodes."""
    return [
        {
            **item,
            "map_parent": parent.node.name,
            "position": position + i,
            "executor": parent.executor,
            **columns,
        }
        for i, item in enumerate(items)
    ]
