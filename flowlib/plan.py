"""The run plan: a compiled workflow as plain frozen data that round-trips through JSON exactly.

A plan is what a scheduler executes. It holds no live code: operators are references
(a file and qualname, or pickled bytes) with their fingerprints, inputs are digests
and values, and a map over a future is a template expanded when its list is known.
Compiling (flowlib.compile) happens where the pipeline is imported anyway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from flowlib.resources import Distributed, Resources

PLAN_VERSION = 1
RETURN = "return"


class PlanError(ValueError):
    """A document is not a plan this flowlib can execute."""


# -- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiteralInput:
    """A plain value: JSON-exact as `value`, else cloudpickled (`pickled`, base64), or a
    flowlib.File (`file`, relative to the project root when inside it). `digest` enters the key."""

    digest: str
    value: Any = None
    pickled: str | None = None
    file: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.file is not None:
            return {"file": self.file, "d": self.digest}
        if self.pickled is not None:
            return {"pickled": self.pickled, "d": self.digest}
        return {"lit": self.value, "d": self.digest}


@dataclass(frozen=True, slots=True)
class RefInput:
    """One output of an upstream node (`index`: one element of a list output)."""

    node: str
    output: str = RETURN
    index: int | None = None

    def to_json(self) -> dict[str, Any]:
        ref = [self.node, self.output] if self.index is None else [self.node, self.output, self.index]
        return {"ref": ref}


@dataclass(frozen=True, slots=True)
class ContainerInput:
    """A list, tuple or dict holding upstream refs; `keys` are a dict's keys beside its items."""

    kind: str  # "list" | "tuple" | "dict"
    items: tuple[PlanInput, ...]
    keys: tuple[LiteralInput, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.kind == "dict":
            return {
                "dict": [[k.to_json(), v.to_json()] for k, v in zip(self.keys or (), self.items, strict=True)]
            }
        return {self.kind: [item.to_json() for item in self.items]}


PlanInput = LiteralInput | RefInput | ContainerInput


def input_from_json(data: dict[str, Any]) -> PlanInput:
    if "ref" in data:
        return RefInput(*data["ref"])
    if "d" in data:
        return LiteralInput(data["d"], data.get("lit"), pickled=data.get("pickled"), file=data.get("file"))
    if "dict" in data:
        pairs = data["dict"]
        return ContainerInput(
            "dict",
            tuple(input_from_json(v) for _, v in pairs),
            tuple(input_from_json(k) for k, _ in pairs),  # type: ignore[misc]
        )
    for kind in ("list", "tuple"):
        if kind in data:
            return ContainerInput(kind, tuple(input_from_json(item) for item in data[kind]))
    raise PlanError(f"not a plan input: {json.dumps(data)[:80]}")


def refs_in(value: PlanInput) -> list[RefInput]:
    """The upstream refs an input holds, at any depth."""
    if isinstance(value, RefInput):
        return [value]
    if isinstance(value, ContainerInput):
        return [ref for item in value.items for ref in refs_in(item)]
    return []


# -- operators ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """An operator as the scheduler sees it: how a worker finds it, its fingerprint, its outputs
    and its options. `fields` names the separate outputs of a NamedTuple or tuple return
    (None: one output named "return"); `cls` is the NamedTuple class as (module, qualname)."""

    qualname: str
    module: str
    file: str  # relative to the plan's project root when inside it
    pickled: str | None
    fingerprint: str
    fingerprint_parts: dict[str, Any]
    fields: tuple[str, ...] | None = None
    cls: tuple[str, str] | None = None
    cache: bool = True
    version: str | None = None
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    resources: Resources = field(default_factory=Resources)
    executor: str | None = None
    distributed: Distributed | None = None

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.fields or (RETURN,)

    def to_json(self) -> dict[str, Any]:
        return {
            "qualname": self.qualname,
            "module": self.module,
            "file": self.file,
            "pickled": self.pickled,
            "fingerprint": self.fingerprint,
            "fingerprint_parts": self.fingerprint_parts,
            "fields": list(self.fields) if self.fields is not None else None,
            "cls": list(self.cls) if self.cls is not None else None,
            "cache": self.cache,
            "version": self.version,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "timeout": self.timeout,
            "resources": self.resources.to_json(),
            "executor": self.executor,
            "distributed": self.distributed.to_json() if self.distributed is not None else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OperatorSpec:
        return cls(
            qualname=d["qualname"],
            module=d["module"],
            file=d["file"],
            pickled=d.get("pickled"),
            fingerprint=d["fingerprint"],
            fingerprint_parts=d["fingerprint_parts"],
            fields=tuple(d["fields"]) if d.get("fields") is not None else None,
            cls=tuple(d["cls"]) if d.get("cls") is not None else None,  # type: ignore[arg-type]
            cache=d["cache"],
            version=d.get("version"),
            retries=d["retries"],
            retry_delay=d["retry_delay"],
            timeout=d.get("timeout"),
            resources=Resources.from_json(d["resources"]),
            executor=d.get("executor"),
            distributed=Distributed(**d["distributed"]) if d.get("distributed") else None,
        )


# -- nodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanNode:
    """One node. kind "task" runs its operator once. kind "map" fans its operator out: over
    `items` (the item inputs of a literal list, known now) or over the list that
    `inputs[map_param]` refers to (known when it resolves); it then gathers the items' results.
    `split` names the list outputs that a map expands over (stored one artifact per element)."""

    name: str
    op: str
    inputs: dict[str, PlanInput]
    site: str = ""
    kind: str = "task"
    map_param: str | None = None
    items: tuple[PlanInput, ...] | None = None
    split: tuple[str, ...] = ()

    def upstream(self) -> list[str]:
        names = []
        for value in self.inputs.values():
            if type(value) is RefInput:
                names.append(value.node)
            elif type(value) is ContainerInput:
                names.extend(ref.node for ref in refs_in(value))
        for item in self.items or ():
            if type(item) is not LiteralInput:
                names.extend(ref.node for ref in refs_in(item))
        return list(dict.fromkeys(names)) if len(names) > 1 else names

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "name": self.name,
            "op": self.op,
            "inputs": {param: value.to_json() for param, value in self.inputs.items()},
            "site": self.site,
        }
        if self.kind != "task":
            shown.update(kind=self.kind, map_param=self.map_param)
            if self.items is not None:
                shown["items"] = [item.to_json() for item in self.items]
        if self.split:
            shown["split"] = list(self.split)
        return shown

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlanNode:
        items = d.get("items")
        return cls(
            name=d["name"],
            op=d["op"],
            inputs={param: input_from_json(value) for param, value in d["inputs"].items()},
            site=d.get("site", ""),
            kind=d.get("kind", "task"),
            map_param=d.get("map_param"),
            items=tuple(input_from_json(item) for item in items) if items is not None else None,
            split=tuple(d.get("split") or ()),
        )


def item_name(map_name: str, index: int) -> str:
    return f"{map_name}[{index}]"


# -- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A compiled workflow: nodes in build order (a topological order), its operators, the
    structure of its outputs, and where its code lives."""

    workflow: str
    file: str  # the pipeline file, relative to project_root when inside it
    module: str
    project_root: str
    params: dict[str, Any]
    operators: dict[str, OperatorSpec]
    nodes: tuple[PlanNode, ...]
    outputs: Any = None  # the workflow's return structure (see flowlib.compile.output_spec)
    version: int = PLAN_VERSION

    def __post_init__(self) -> None:
        # as they come back from the plan's JSON (and the run database): {1: x} as {"1": x}, ...
        object.__setattr__(self, "params", {str(k): _as_json(v) for k, v in self.params.items()})

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "workflow": self.workflow,
            "file": self.file,
            "module": self.module,
            "project_root": self.project_root,
            "params": self.params,
            "operators": {key: op.to_json() for key, op in self.operators.items()},
            "nodes": [node.to_json() for node in self.nodes],
            "outputs": self.outputs,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True, allow_nan=False)

    def digest(self) -> str:
        return hashlib.sha256(self.dumps().encode()).hexdigest()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        if not isinstance(data, dict) or data.get("version") != PLAN_VERSION:
            found = data.get("version") if isinstance(data, dict) else type(data).__name__
            raise PlanError(f"not a version {PLAN_VERSION} plan (found version {found!r})")
        try:
            return cls(
                workflow=data["workflow"],
                file=data["file"],
                module=data["module"],
                project_root=data["project_root"],
                params=data["params"],
                operators={key: OperatorSpec.from_json(op) for key, op in data["operators"].items()},
                nodes=tuple(PlanNode.from_json(node) for node in data["nodes"]),
                outputs=data.get("outputs"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"malformed plan: {type(exc).__name__}: {exc}") from None

    @classmethod
    def loads(cls, text: str | bytes) -> Plan:
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PlanError(f"a plan is JSON: {exc}") from None

    def with_root(self, project_root: str) -> Plan:
        """The same plan run from another copy of its project (a code snapshot)."""
        return Plan(
            self.workflow,
            self.file,
            self.module,
            project_root,
            self.params,
            self.operators,
            self.nodes,
            self.outputs,
        )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _as_json(value: Any) -> Any:
    """`value` as strict JSON gives it back: tuples as lists, keys as JSON writes them, a float that
    JSON cannot hold (NaN, infinity) or any other object as its repr."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [_as_json(item) for item in value]
    if isinstance(value, dict):
        return {_json_key(key): _as_json(item) for key, item in value.items()}
    return repr(value)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)  # what json.dumps writes for a key: "1", "true", "null", "0.5", "NaN"
    return repr(key)
