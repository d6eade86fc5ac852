"""A node's inputs as digests (for its cache key) and as what its worker is sent.

What a worker gets for one input (see executors.worker.load_input):
  {"literal": value} | {"pickled": b64} | {"file": path}   a value given in the workflow
  {"ref": artifact ref}                                      one upstream output (or list element)
  {"fields": {name: ref}, "cls": [module, qualname] | None}  a whole NamedTuple / tuple output
  {"list": [...]} | {"tuple": [...]} | {"dict": [[key, value], ...]}  containers of the above
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flowlib.hashing import hash_labelled, tuple_digest
from flowlib.plan import ContainerInput, LiteralInput, PlanInput, RefInput
from scheduler.engine.state import NodeState

# (node state, output name) -> the element refs of that list output
Elements = Callable[[NodeState, str], list[dict[str, Any]]]
REF_KEYS = ("digest", "serializer", "serializer_version", "size")


def artifact(ref: Mapping[str, Any]) -> dict[str, Any]:
    """An output ref as stored and sent: without in-memory extras (elements, inline bytes)."""
    return {key: ref[key] for key in REF_KEYS}


def literal_spec(value: LiteralInput) -> dict[str, Any]:
    if value.file is not None:
        return {"file": value.file}
    if value.pickled is not None:
        return {"pickled": value.pickled}
    return {"literal": value.value}


def resolve(
    value: PlanInput, states: Mapping[str, NodeState], elements: Elements
) -> tuple[dict[str, Any], str]:
    """Return (what the worker gets, the digest that enters the cache key) for one input."""
    if isinstance(value, LiteralInput):
        return literal_spec(value), value.digest
    if isinstance(value, RefInput):
        return _ref(value, states, elements)
    assert isinstance(value, ContainerInput)
    resolved = [resolve(item, states, elements) for item in value.items]
    if value.kind == "dict":
        keys = value.keys or ()
        spec = {"dict": [[literal_spec(k), s] for k, (s, _) in zip(keys, resolved, strict=True)]}
        pairs = sorted([k.digest, d] for k, (_, d) in zip(keys, resolved, strict=True))
        return spec, hash_labelled(["dict", pairs])
    return {value.kind: [s for s, _ in resolved]}, hash_labelled([value.kind, [d for _, d in resolved]])


def _ref(value: RefInput, states: Mapping[str, NodeState], elements: Elements) -> tuple[dict[str, Any], str]:
    upstream = states[value.node]
    outputs = upstream.outputs or {}
    if value.index is not None:
        ref = elements(upstream, value.output)[value.index]
        return {"ref": artifact(ref)}, ref["digest"]
    if value.output in outputs:
        ref = outputs[value.output]
        return {"ref": artifact(ref)}, ref["digest"]
    # a whole NamedTuple or tuple output: one artifact per field
    op = upstream.op
    fields = op.fields or ()
    cls = list(op.cls) if op.cls is not None else None
    if upstream.kind == "map":  # a map of such an operator: a list of tuples, stored one list per field
        columns = [elements(upstream, name) for name in fields]
        rows = [dict(zip(fields, row, strict=True)) for row in zip(*columns, strict=True)]
        specs = [{"fields": {n: artifact(r) for n, r in row.items()}, "cls": cls} for row in rows]
        digests = [tuple_digest([r["digest"] for r in row.values()]) for row in rows]
        return {"list": specs}, hash_labelled(["list", digests])
    refs = {name: outputs[name] for name in fields}
    spec = {"fields": {name: artifact(ref) for name, ref in refs.items()}, "cls": cls}
    return spec, tuple_digest([ref["digest"] for ref in refs.values()])
