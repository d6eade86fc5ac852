"""Read models for a run's outputs: values as JSON, and where each artifact file is.

`flow outputs` and the server's API both answer from here, so they show the same thing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from flowlib.artifacts import may_be_inline
from flowlib.errors import FlowError
from flowlib.results import jsonable
from scheduler.store import repository as repo
from scheduler.store.readback import Values, _named_nodes, load_run


def run_values(engine: Engine, reader: Any, run_id: str, *, imports: bool = True) -> Any:
    """The workflow's outputs as JSON can hold them."""
    return load_run(engine, reader, run_id, with_nodes=False, classes=False, imports=imports).outputs_json()


def node_values(
    engine: Engine, reader: Any, run_id: str, node: str, *, imports: bool = True
) -> dict[str, Any]:
    """One node's outputs by output name, as JSON can hold them."""
    with engine.connect() as conn:
        run = repo.require_run(conn, run_id)
        row = repo.require_node(conn, run, node)
    values = Values(reader, run.file if imports else None, classes=False)
    try:
        return {name: jsonable(values.get(ref)) for name, ref in (row.outputs or {}).items()}
    except Exception as exc:
        raise FlowError(f"cannot load the outputs of node '{node}': {type(exc).__name__}: {exc}") from None


def paths(engine: Engine, reader: Any, run_id: str, node: str | None) -> list[dict[str, Any]]:
    """Where each artifact of a node's outputs (or the workflow's) is: a file path, or None for one
    kept in the database."""
    with engine.connect() as conn:
        run = repo.require_run(conn, run_id)
        names = [node] if node is not None else sorted(_named_nodes(run.outputs or {}))
        rows = {name: repo.require_node(conn, run, name).outputs or {} for name in names}
    shown = []
    for name, refs in rows.items():
        for output, ref in refs.items():
            label = output if node is not None else name if output == "return" else f"{name}.{output}"
            inline = may_be_inline(ref) and reader.inline.get(ref["digest"]) is not None
            where = None if inline else reader.store.path_for(ref["digest"])
            shown.append(
                {"output": label, "path": where, "serializer": ref["serializer"], "digest": ref["digest"]}
            )
    return shown
