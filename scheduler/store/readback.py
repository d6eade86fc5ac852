"""Read recorded runs back: RunResult objects, the workflow's output values, and liveness.

Reading never imports the user's pipeline unless a value needs its classes to load (a
pickled object, a NamedTuple asked for as Python objects); then it imports it once.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import namedtuple
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, Row

from flowlib.errors import FlowError, RunNotFound
from flowlib.loading import find_object
from flowlib.results import UNFINISHED, NodeResult, NodeStatus, RunResult, RunStatus, jsonable
from flowlib.store import NeedsPipelineCode
from scheduler.store import repository as repo

__all__ = ["RunNotFound", "load_run", "result_of", "scheduler_alive", "shown_status"]

STALE_HEARTBEAT_S = 30.0


def scheduler_alive(run: Row) -> bool:
    """Whether the scheduler that runs `run` is alive (pid alive here, heartbeat fresh)."""
    if run.status not in ("running", "pending"):
        return False
    if run.heartbeat_at is None or time.time() - run.heartbeat_at > STALE_HEARTBEAT_S:
        return False
    if run.host == socket.gethostname() and run.pid and not getattr(run, "server", None):
        try:
            os.kill(run.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def shown_status(run: Row) -> str:
    """A run's status as readers see it: a `running` run whose scheduler died reads `interrupted`."""
    if run.status in ("running", "pending") and not scheduler_alive(run):
        return RunStatus.INTERRUPTED.value
    return run.status


def load_run(
    engine: Engine,
    reader: Any,
    run_id: str,
    *,
    with_nodes: bool = True,
    classes: bool = True,
    imports: bool = True,
) -> RunResult:
    """Return a recorded run whose outputs load through `reader` (see scheduler.store.blobs.Blobs.reader)."""
    with engine.connect() as conn:
        run = repo.require_run(conn, run_id)
        nodes = repo.node_summaries(conn, run.id) if with_nodes else []
    return result_of(run, nodes, reader, engine, with_nodes=with_nodes, classes=classes, imports=imports)


def result_of(
    run: Row,
    nodes: list[Any],
    reader: Any,
    engine: Engine,
    *,
    with_nodes: bool = True,
    classes: bool = True,
    imports: bool = True,
) -> RunResult:
    """`classes`: load NamedTuple outputs as the pipeline's own classes (importing it when needed);
    `imports=False` (a server) never imports the pipeline: what needs it fails to load instead."""
    pipeline = run.file if imports else None
    spec = run.outputs
    status = shown_status(run)

    def load() -> tuple[Any, Any]:
        if run.status != "succeeded" or spec is None:
            return None, None
        with engine.connect() as conn:  # only the nodes the outputs name: a map has thousands of others
            outputs_by_node = repo.node_outputs(conn, run.id, sorted(_named_nodes(spec)))
        values = Values(reader, pipeline, classes=classes)
        try:
            value = values.resolve(spec, outputs_by_node)
        except Exception as exc:
            raise FlowError(f"cannot load the outputs of run {run.id}: {type(exc).__name__}: {exc}") from None
        return value, jsonable(value)

    return RunResult(
        run_id=run.id,
        workflow=run.workflow,
        status=RunStatus(status),
        nodes=[node_result(node, interrupted=status == "interrupted") for node in nodes]
        if with_nodes
        else [],
        resumed_from=run.resumed_from,
        error=run.error if status != "interrupted" else run.error or "interrupted: its scheduler died",
        _load_outputs=load,
        _node_outputs=NodeOutputs(engine, run, Values(reader, pipeline, classes=classes)),
    )


class NodeOutputs(Mapping):
    """A run's node outputs by node name, loaded on first access (see RunResult.node_outputs)."""

    def __init__(self, engine: Engine, run: Row, values: Values) -> None:
        self.engine, self.run, self.values = engine, run, values
        self._names: list[str] | None = None

    def _all(self) -> list[str]:
        if self._names is None:
            with self.engine.connect() as conn:
                self._names = [n.name for n in repo.nodes_of(conn, self.run.id) if n.outputs]
        return self._names

    def __getitem__(self, name: str) -> Any:
        with self.engine.connect() as conn:
            refs = repo.node_outputs(conn, self.run.id, [name]).get(name)
            plan_text = (
                repo.load_plan_text(conn, self.run.plan_digest)
                if getattr(self.run, "plan_digest", None)
                else None
            )
        if not refs:
            raise KeyError(name)
        if list(refs) == ["return"]:
            return self.values.get(refs["return"])
        return self.values.resolve(
            {"ref": [name, "return"], **_tuple_shape(plan_text, name, list(refs))}, {name: refs}
        )

    def __iter__(self) -> Any:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def _tuple_shape(plan_text: str | None, name: str, names: list[str]) -> dict[str, Any]:
    """The class of a multi-output node's tuple (from the run's plan): its NamedTuple, or a tuple."""
    if plan_text is None:
        return {"fields": names, "cls": None}
    from flowlib.plan import Plan

    plan = Plan.loads(plan_text)
    base = name.split("[", 1)[0]
    for node in plan.nodes:
        if node.name in (name, base):
            op = plan.operators[node.op]
            shape = {"fields": list(op.fields or names), "cls": list(op.cls) if op.cls else None}
            return {**shape, "zip": True} if node.kind == "map" and node.name == name else shape
    return {"fields": names, "cls": None}


def _named_nodes(spec: Any) -> set[str]:
    """The nodes an output spec (see Values.resolve) refers to."""
    if "ref" in spec:
        return {spec["ref"][0]}
    if "list" in spec or "tuple" in spec:
        items = spec.get("list", spec.get("tuple"))
    elif "dict" in spec:
        items = (
            [v for _, v in spec["dict"]] if isinstance(spec["dict"], list) else list(spec["dict"].values())
        )
    else:
        items = list((spec.get("fields") or {}).values()) if isinstance(spec.get("fields"), dict) else []
    return set().union(*(_named_nodes(item) for item in items)) if items else set()


def node_result(node: Any, *, interrupted: bool = False) -> NodeResult:
    status = NodeStatus(node.status)
    if interrupted and status in UNFINISHED:
        status = NodeStatus.INTERRUPTED
    return NodeResult(
        name=node.name,
        operator=node.operator,
        status=status,
        cached=bool(node.cached),
        attempts=int(node.attempts or 0),
        duration_s=node.duration_s,
        error=node.error,
        reasons=node.reasons,
    )


class Values:
    """Loads stored values; imports the run's pipeline only when a value needs its classes."""

    def __init__(self, reader: Any, pipeline: str | None, *, classes: bool = True) -> None:
        """`pipeline`: the file to import when a value needs its classes (None: never import)."""
        self.reader, self.pipeline, self.classes = reader, pipeline, classes
        self._imported = False

    def get(self, ref: Mapping[str, Any]) -> Any:
        try:
            return self.reader.get(ref)
        except (ImportError, AttributeError, NeedsPipelineCode):
            if not self._import():
                raise
            return self.reader.get(ref)

    def unpickle(self, text: str) -> Any:
        import pickle

        from flowlib.plan import unb64

        try:
            return pickle.loads(unb64(text))
        except (ImportError, AttributeError):
            if not self._import():
                raise
            return pickle.loads(unb64(text))

    def _import(self) -> bool:
        """Import the pipeline under the module name its workers used (once); False if it was."""
        if self._imported or not self.pipeline:
            return False
        self._imported = True
        from flowlib.loading import load_module

        try:
            load_module(self.pipeline)
        except Exception:
            pass
        return True

    def namedtuple(self, ref: list[str] | None, names: list[str]) -> Any:
        if ref:
            module, qualname = ref
            if self.classes:
                found = find_object(module, qualname) if module in sys.modules else None
                if found is None and self._import():
                    found = find_object(module, qualname)
                if found is not None:
                    return found
            return namedtuple(qualname.rsplit(".", 1)[-1], names)
        return tuple

    def resolve(self, spec: Any, outputs: Mapping[str, Mapping[str, Any]]) -> Any:
        """Turn an output spec (refs to node outputs inside containers) into Python values."""
        if "ref" in spec:
            node, output = spec["ref"][:2]
            refs = outputs[node]
            if output in refs:
                return self.get(refs[output])
            names = spec.get("fields") or list(refs)
            cls = self.namedtuple(spec.get("cls"), names)
            columns = [self.get(refs[name]) for name in names]
            if spec.get("zip"):
                return [_make(cls, row) for row in zip(*columns, strict=True)]
            return _make(cls, columns)
        if "list" in spec:
            return [self.resolve(item, outputs) for item in spec["list"]]
        if "tuple" in spec:
            return tuple(self.resolve(item, outputs) for item in spec["tuple"])
        if "dict" in spec:
            pairs = spec["dict"]
            if isinstance(pairs, dict):  # written by flowlib before 0.2: string keys
                return {key: self.resolve(item, outputs) for key, item in pairs.items()}
            return {self.resolve(key, outputs): self.resolve(item, outputs) for key, item in pairs}
        if "nt" in spec or isinstance(spec.get("fields"), dict):
            names = list(spec["fields"])
            cls = self.namedtuple(spec.get("nt"), names) if spec.get("nt") else namedtuple("Outputs", names)
            return cls(*(self.resolve(spec["fields"][name], outputs) for name in names))
        if "pickled" in spec:
            return self.unpickle(spec["pickled"])
        if "file" in spec:
            from flowlib.files import File

            return File(spec["file"], base=os.path.dirname(self.pipeline or "."))
        return spec.get("lit", spec.get("literal"))


def _make(cls: Any, values: Any) -> Any:
    return tuple(values) if cls is tuple else cls(*values)
