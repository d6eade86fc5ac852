"""Resume planning: which nodes of an earlier run a new run reuses, and why the others rerun.

Pure: it compares a plan (the code as it is now) with the recorded nodes of the run it
resumes, matching nodes by name, and asks the cache through the machine's Lookups port.
A map whose list is known (its source is reused, or its items are literal) is planned item
by item; one whose source reruns is planned as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowlib.fingerprint import diff_fingerprints
from flowlib.hashing import node_key
from flowlib.plan import LiteralInput, Plan, PlanNode
from scheduler.engine import maps
from scheduler.engine.inputs import resolve
from scheduler.engine.machine import Lookups
from scheduler.engine.state import NodeState

NEVER_RAN = {"pending", "queued", "upstream_failed"}
SUCCEEDED = {"succeeded", "cached"}
KEPT = "kept though its code changed (--reuse-succeeded)"


@dataclass
class Step:
    name: str
    action: str  # "reuse" | "rerun"
    reasons: list[str] = field(default_factory=list)
    reuse: dict[str, Any] | None = (
        None  # what the new run takes over: outputs, cache_key, fingerprint, inputs
    )
    item_of: str | None = None  # the map this item belongs to

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "reasons": self.reasons}


def old_status_reasons(old: Mapping[str, Any] | None) -> list[str]:
    if old is None or old["status"] in NEVER_RAN:
        return ["never ran"]
    status = old["status"]
    if status == "failed":
        return ["failed"]
    if status in ("running", "interrupted") or (status == "cancelled" and old.get("attempts")):
        return ["interrupted"]
    if status == "cancelled":
        return ["never ran"]
    return []


def plan_resume(
    plan: Plan,
    old_nodes: Mapping[str, Mapping[str, Any]],
    old_parts: Mapping[str, dict[str, Any]],
    lookups: Lookups,
    *,
    reuse_succeeded: bool = False,
) -> list[Step]:
    """Decide, in build order (a topological order), whether each node is reused or rerun."""
    planner = _Planner(plan, old_nodes, old_parts, lookups, reuse_succeeded)
    for node in plan.nodes:
        planner.node(node)
    return planner.steps


class _Planner:
    def __init__(
        self,
        plan: Plan,
        old_nodes: Mapping[str, Mapping[str, Any]],
        old_parts: Mapping[str, dict[str, Any]],
        lookups: Lookups,
        reuse_succeeded: bool,
    ) -> None:
        self.plan, self.old, self.parts, self.lookups = plan, old_nodes, old_parts, lookups
        self.reuse_succeeded = reuse_succeeded
        self.steps: list[Step] = []
        self.by_name: dict[str, Step] = {}
        self.states: dict[str, NodeState] = {}

    def node(self, node: PlanNode) -> None:
        if node.kind == "map":
            self.map(node)
        else:
            self.task(node)

    def _reruns(self, node: PlanNode) -> bool:
        return any(self.by_name[up].action == "rerun" for up in node.upstream())

    def _add(self, step: Step, node: PlanNode, outputs: dict[str, Any] | None) -> Step:
        self.steps.append(step)
        self.by_name[step.name] = step
        op = self.plan.operators[node.op]
        self.states[step.name] = NodeState(node, op, outputs=dict(outputs) if outputs else None)
        return step

    def task(self, node: PlanNode, item_of: str | None = None) -> Step:
        old = self.old.get(node.name)
        op = self.plan.operators[node.op]
        status_reasons = old_status_reasons(old)
        code: list[str] = []
        changed: list[str] = []
        key = None
        upstream_reruns = self._reruns(node)
        if old is not None and old.get("fingerprint") and old["fingerprint"] != op.fingerprint:
            code = diff_fingerprints(self.parts.get(old["fingerprint"], {}), op.fingerprint_parts)
        if not upstream_reruns:
            digests = {p: resolve(v, self.states, self._elements)[1] for p, v in node.inputs.items()}
            old_inputs = old.get("inputs") if old is not None else None
            if old_inputs is not None:
                changed = [
                    f"input changed: {p}{' (file content)' if _is_file(node.inputs[p]) else ''}"
                    for p in sorted(digests)
                    if old_inputs.get(p) != digests[p]
                ]
            key = node_key(op.fingerprint, digests)
        reasons = status_reasons + code + changed + (["upstream reruns"] if upstream_reruns else [])
        if old is not None and not reasons:
            return self._add(
                Step(node.name, "reuse", ["succeeded before"], _reuse(old), item_of), node, old["outputs"]
            )
        if (
            self.reuse_succeeded
            and old is not None
            and code
            and not (status_reasons or changed or upstream_reruns)
        ):
            step = Step(node.name, "reuse", ["succeeded before", *code, KEPT], _reuse(old), item_of)
            return self._add(step, node, old["outputs"])
        if key is not None:
            entry = self.lookups.cached([key]).get(key)
            if entry is not None and self.lookups.problem(entry["outputs"]) is None:
                reuse = {
                    "outputs": entry["outputs"],
                    "cache_key": key,
                    "fingerprint": op.fingerprint,
                    "inputs": digests,
                }
                return self._add(
                    Step(node.name, "reuse", ["cache hit"], reuse, item_of), node, entry["outputs"]
                )
        return self._add(Step(node.name, "rerun", reasons or ["upstream reruns"], None, item_of), node, None)

    def map(self, node: PlanNode) -> None:
        if self._reruns(node):
            self._add(Step(node.name, "rerun", ["upstream reruns"]), node, None)
            return
        if node.items is not None:
            items = maps.item_nodes(node, list(node.items))
        else:
            source = node.inputs[node.map_param]  # type: ignore[index]
            count = len(self._elements(self.states[source.node], source.output))  # type: ignore[union-attr]
            items = maps.item_nodes(node, maps.over_elements(node, count))
        steps = [self.task(item, item_of=node.name) for item in items]
        rerun = [s for s in steps if s.action == "rerun"]
        if not rerun:
            old = self.old.get(node.name)
            outputs = None
            if old is not None and old["status"] in SUCCEEDED:
                outputs = old["outputs"]
            else:  # every item is kept: the map gathers them again at run time
                states = [self.states[s.name] for s in steps]
                outputs = maps.gather(states, self.plan.operators[node.op].fields)[0]
            self._add(Step(node.name, "reuse", ["all items reused"]), node, outputs)
            return
        self._add(Step(node.name, "rerun", [f"{len(rerun)} of {len(steps)} items rerun"]), node, None)

    def _elements(self, state: NodeState, output: str) -> list[dict[str, Any]]:
        ref = (state.outputs or {})[output]
        if "elements" not in ref:
            ref = dict(ref, elements=self.lookups.elements(ref))
            state.outputs[output] = ref  # type: ignore[index]
        return ref["elements"]


def _reuse(old: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "outputs": old["outputs"],
        "cache_key": old.get("cache_key"),
        "fingerprint": old.get("fingerprint"),
        "inputs": old.get("inputs"),
    }


def _is_file(value: Any) -> bool:
    return isinstance(value, LiteralInput) and value.file is not None


def reuse_of(steps: list[Step]) -> dict[str, dict[str, Any]]:
    """What the resumed run takes over: node name -> reuse entry (tasks and map items)."""
    return {step.name: step.reuse for step in steps if step.action == "reuse" and step.reuse is not None}
