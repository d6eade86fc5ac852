"""Maps at run time: the item nodes of a map, and the lists a map gathers from its items."""

from __future__ import annotations

from typing import Any

from flowlib.artifacts import INLINE_LIMIT
from flowlib.plan import RETURN, PlanInput, PlanNode, RefInput, item_name
from flowlib.store import ArtifactRef, pack_manifest
from scheduler.engine.state import NodeState


def item_nodes(node: PlanNode, item_inputs: list[PlanInput]) -> list[PlanNode]:
    """One node per item: the map's operator with the item in `map_param` and the fixed inputs."""
    fixed = {k: v for k, v in node.inputs.items() if k != node.map_param}
    return [
        PlanNode(item_name(node.name, i), node.op, {node.map_param: item, **fixed}, node.site)  # type: ignore[dict-item]
        for i, item in enumerate(item_inputs)
    ]


def over_elements(node: PlanNode, count: int) -> list[PlanInput]:
    """The item inputs of a map over an upstream list of `count` elements."""
    source = node.inputs[node.map_param]  # type: ignore[index]
    assert isinstance(source, RefInput)
    return [RefInput(source.node, source.output, i) for i in range(count)]


def gather(
    items: list[NodeState], fields: tuple[str, ...] | None
) -> tuple[dict[str, Any], list[tuple[ArtifactRef, bytes]]]:
    """The outputs of a map (one manifest per output of its operator, listing the items' artifacts)
    and the manifests' bytes. Each output ref lists its `elements` (in memory)."""
    outputs: dict[str, Any] = {}
    manifests = []
    for name in fields or (RETURN,):
        refs = [item.outputs[name] for item in items]  # type: ignore[index]
        manifest, data = pack_manifest([ArtifactRef.from_json(ref) for ref in refs])
        manifests.append((manifest, data))
        outputs[name] = {**manifest.to_json(), "elements": refs}
    return outputs, manifests


def kept_inline(ref: ArtifactRef) -> bool:
    return ref.size <= INLINE_LIMIT
