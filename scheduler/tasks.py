"""From DAG nodes to cache keys and TaskSpecs: what a node's inputs are, as digests."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle

from executors.base import OperatorRef, TaskSpec
from executors.worker import checkpoint_name
from flowlib.artifacts import INLINE_LIMIT
from flowlib.dag import Literal, Node, Ref
from flowlib.hashing import tuple_digest
from flowlib.operators import Operator


@dataclass
class NodeState:
    """What the scheduler knows of one node while the run goes on."""

    node: Node
    row_id: int
    status: str = "pending"
    waiting: int = 0
    attempts: int = 0
    outputs: dict[str, dict[str, Any]] | None = None
    key: str | None = None
    fingerprint: str | None = None  # the operator fingerprint's digest
    input_digests: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  # why it reran or did something unusual
    input_specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # param -> input_spec()
    executor: str | None = None
    task_id: str | None = None
    started_at: float | None = None
    first_started_at: float | None = None
    error: dict[str, Any] | None = None
    reuse: dict[str, Any] | None = None  # outputs reused from the run this one resumes


class Fingerprints:
    """Operator fingerprints and import references, computed once per operator function."""

    def __init__(self, project_root: Path) -> None:
        self.project_root = project_root
        self._fingerprints: dict[tuple[int, str | None], tuple[Any, dict[str, Any]]] = {}
        self._refs: dict[int, OperatorRef] = {}

    def of(self, op: Operator) -> Any:
        return self._entry(op)[0]

    def json_of(self, op: Operator) -> dict[str, Any]:
        """The fingerprint as stored in the database (computed once per operator)."""
        return self._entry(op)[1]

    def _entry(self, op: Operator) -> tuple[Any, dict[str, Any]]:
        key = (id(op.fn), op.version)
        found = self._fingerprints.get(key)
        if found is not None:
            return found
        from flowlib.fingerprint import operator_fingerprint

        fingerprint = operator_fingerprint(op.fn, version=op.version, project_root=self.project_root)
        found = self._fingerprints[key] = (fingerprint, fingerprint.to_json())
        return found

    def ref(self, op: Operator) -> OperatorRef:
        """Import by file and qualname where a worker can; pickle the operator by value otherwise."""
        found = self._refs.get(id(op))
        if found is None:
            fn = op.fn
            module = sys.modules.get(fn.__module__)
            file = getattr(module, "__file__", None) or fn.__code__.co_filename
            importable = (
                fn.__module__ != "__main__" and "<locals>" not in op.qualname and _resolves(module, op)
            )
            pickled = None if importable else cloudpickle.dumps(op)
            found = OperatorRef(str(file), fn.__module__, op.qualname, pickled)
            self._refs[id(op)] = found
        return found


def _resolves(module: Any, op: Operator) -> bool:
    obj = module
    for part in op.qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return getattr(obj, "fn", None) is op.fn


def input_spec(value: Ref | Literal, states: dict[str, NodeState]) -> tuple[dict[str, Any], str]:
    """Return (what the worker gets, the digest that enters the cache key) for one input.

    The spec's "inline" lists the artifacts kept in the database that the worker needs;
    `with_inline_bytes` puts their bytes in when the attempt is sent.
    """
    if isinstance(value, Literal):
        return {"literal": value.value}, value.digest
    upstream = states[value.node]
    outputs = upstream.outputs or {}
    if value.index is not None:
        ref = outputs[value.output]
        digest = ref["elements"][value.index]
        return _inline({"digest": digest}, [digest] if digest in (ref.get("inline") or ()) else []), digest
    if value.output in outputs:
        ref = outputs[value.output]
        return _inline({"digest": ref["digest"]}, ref.get("inline") or []), ref["digest"]
    fields = {name: ref["digest"] for name, ref in outputs.items()}
    cls = upstream.node.operator.return_type
    needed = [digest for ref in outputs.values() for digest in ref.get("inline") or ()]
    spec = _inline({"fields": fields, "cls": [cls.__module__, cls.__qualname__]}, needed)
    return spec, tuple_digest(list(fields.values()))


def _inline(spec: dict[str, Any], digests: list[str]) -> dict[str, Any]:
    if digests:
        spec["inline"] = list(digests)
    return spec


def with_inline_bytes(spec: dict[str, Any], blobs: Any) -> dict[str, Any]:
    """The spec as a worker takes it: "inline" maps each listed digest to its bytes."""
    if "inline" not in spec:
        return spec
    return {**spec, "inline": blobs.get_many(spec["inline"])}


def task_spec(
    state: NodeState,
    task_id: str,
    *,
    run_id: str,
    root_run_id: str,
    fingerprints: Fingerprints,
    blobs: Any,
    store_url: str,
    fsync: bool,
) -> TaskSpec:
    """Attempt number `state.attempts` of a node, as a worker gets it."""
    node, op = state.node, state.node.operator
    return TaskSpec(
        task_id=task_id,
        run_id=run_id,
        node=node.name,
        attempt=state.attempts,
        operator=fingerprints.ref(op),
        inputs={param: with_inline_bytes(spec, blobs) for param, spec in state.input_specs.items()},
        resources=op.resources,
        timeout=op.timeout,
        distributed=op.distributed,
        store_url=store_url,
        fsync=fsync,
        checkpoint_ref=checkpoint_name(root_run_id, node.name),
        project_root=str(fingerprints.project_root),
        inline_limit=INLINE_LIMIT,
    )
