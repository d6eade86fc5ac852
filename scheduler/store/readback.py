"""Read recorded runs back: RunResult objects and the workflow's output values."""

from __future__ import annotations

from collections import namedtuple
from importlib import import_module
from typing import Any

from sqlalchemy import Engine, Row

from flowlib.errors import FlowError
from flowlib.results import NodeResult, NodeStatus, RunResult, RunStatus, jsonable
from scheduler.store import repository as repo


class RunNotFound(FlowError):
    """No run has that id."""


def load_run(engine: Engine, reader: Any, run_id: str, *, with_nodes: bool = True) -> RunResult:
    """Return a recorded run whose outputs load through `reader` (see scheduler.store.blobs.Blobs.reader)."""
    with engine.connect() as conn:
        run = repo.find_run(conn, run_id)
        if run is None:
            raise RunNotFound(f"no run '{run_id}' in this database")
        nodes = repo.node_summaries(conn, run.id) if with_nodes else []
    return result_of(run, nodes, reader, engine, with_nodes=with_nodes)


def result_of(
    run: Row, nodes: list[Any], store: Any, engine: Engine, *, with_nodes: bool = True
) -> RunResult:
    spec = run.outputs

    def load() -> tuple[Any, Any]:
        if run.status != "succeeded" or spec is None:
            return None, None
        import_pipeline(run.file)
        with engine.connect() as conn:  # only the nodes the outputs name: a map has thousands of others
            outputs_by_node = repo.node_outputs(conn, run.id, sorted(_named_nodes(spec)))
        try:
            value = resolve(spec, outputs_by_node, store)
        except Exception as exc:
            raise FlowError(f"cannot load the outputs of run {run.id}: {type(exc).__name__}: {exc}") from None
        return value, jsonable(value)

    return RunResult(
        run_id=run.id,
        workflow=run.workflow,
        status=RunStatus(run.status),
        nodes=[node_result(node) for node in nodes] if with_nodes else [],
        resumed_from=run.resumed_from,
        error=run.error,
        _load_outputs=load,
    )


def _named_nodes(spec: Any) -> set[str]:
    """The nodes an output spec (see resolve) refers to."""
    if "ref" in spec:
        return {spec["ref"][0]}
    if "list" in spec or "tuple" in spec:
        items = spec.get("list", spec.get("tuple"))
    else:
        items = list((spec.get("dict") or spec.get("fields") or {}).values())
    return set().union(*(_named_nodes(item) for item in items)) if items else set()


def import_pipeline(file: str) -> None:
    """Import the run's pipeline under the module name its workers used, so values of its
    classes unpickle here too; a pipeline that no longer imports is left out."""
    from flowlib.loading import load_module

    try:
        load_module(file)
    except Exception:
        pass


def node_result(node: Any) -> NodeResult:
    return NodeResult(
        name=node.name,
        operator=node.operator,
        status=NodeStatus(node.status),
        cached=bool(node.cached),
        attempts=int(node.attempts or 0),
        duration_s=node.duration_s,
        error=node.error,
        reasons=node.reasons,
    )


def resolve(spec: Any, outputs: dict[str, dict[str, Any]], store: Any) -> Any:
    """Turn an output spec (refs to node outputs inside containers) into Python values."""
    if "ref" in spec:
        node, output = spec["ref"]
        refs = outputs[node]
        if output in refs:
            return store.get(refs[output]["digest"])
        names = spec.get("fields") or list(refs)
        cls = _class(spec.get("cls"), names)
        return cls(*(store.get(refs[name]["digest"]) for name in names))
    if "list" in spec:
        return [resolve(item, outputs, store) for item in spec["list"]]
    if "tuple" in spec:
        return tuple(resolve(item, outputs, store) for item in spec["tuple"])
    if "dict" in spec:
        return {key: resolve(item, outputs, store) for key, item in spec["dict"].items()}
    if "fields" in spec:
        values = {key: resolve(item, outputs, store) for key, item in spec["fields"].items()}
        return namedtuple("Outputs", list(values))(**values)
    return spec.get("literal")


def _class(ref: list[str] | None, names: list[str]) -> Any:
    if ref:
        import sys

        module, qualname = ref
        try:
            obj: Any = sys.modules.get(module) or import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            return obj
        except Exception:
            pass
        return namedtuple(qualname.rsplit(".", 1)[-1], names)
    return namedtuple("Outputs", names)
