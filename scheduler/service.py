"""Start and record runs: the entry points `flowlib.run`, `flowlib.resume` and the CLI share."""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from executors.base import Executor
from flowlib.config import Config
from flowlib.dag import DAG
from flowlib.errors import ConfigError, FlowError
from flowlib.hashing import find_project_root
from flowlib.store import ArtifactStore
from scheduler import db
from scheduler import repository as repo
from scheduler.launch import RunOptions, executor_names, start_executors
from scheduler.runner import RunScheduler
from scheduler.tasks import Fingerprints


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def open_store(config: Config) -> ArtifactStore:
    """The artifact store the configuration names; a bad URL is a configuration error."""
    try:
        return ArtifactStore(config.artifacts, fsync=config.fsync)
    except (ValueError, ImportError, OSError) as exc:
        raise ConfigError(
            f"artifact store {config.artifacts!r} (from {config.origin('artifacts')}): {exc}"
        ) from None


def connect(config: Config, *, upgrade: bool = True) -> Engine:
    """The run database the configuration names; errors say where its URL came from."""
    try:
        return db.connect(config.db, upgrade=upgrade)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from {config.origin('db')})") from None


def check_resources(dag: DAG, executors: dict[str, Executor], default: str) -> None:
    """Refuse, before anything is recorded, a request no executor here could ever meet."""
    reasons: dict[tuple, str | None] = {}  # a map's thousands of items ask alike: ask each executor once
    for node in dag.nodes.values():
        op = node.operator
        name = op.executor or default
        key = (name, op.resources, op.distributed)
        if key not in reasons:
            reasons[key] = executors[name].refuses(op.resources, op.distributed)
        reason = reasons[key]
        if reason is not None:
            raise ConfigError(f"{node.call_site}: operator '{op.qualname}' (node '{node.name}') {reason}")


def execute_dag(
    dag: DAG,
    config: Config,
    options: RunOptions,
    *,
    resumed_from: str | None = None,
    root_run_id: str | None = None,
    reuse: dict[str, dict[str, Any]] | None = None,
    reasons: dict[str, list[str]] | None = None,
    on_recorded: Callable[[str], None] | None = None,
    executors: dict[str, Executor] | None = None,
) -> str:
    """Record a run of `dag`, execute it to the end and return its run id.

    `executors` already started (see scheduler.launch) are used, and shut down at the end.
    """
    default = options.executor or config.executor
    executors = executors if executors is not None else start_executors(executor_names(dag, default), config)
    try:
        engine = connect(config)
        store = open_store(config)
        check_resources(dag, executors, default)
        run_id = new_run_id()
        project_root = find_project_root(dag.file)
        scheduler = RunScheduler(
            dag,
            run_id=run_id,
            root_run_id=root_run_id or run_id,
            engine=engine,
            store=store,
            executors=executors,
            default_executor=default,
            fingerprints=Fingerprints(project_root),
            use_cache=options.use_cache,
            fail_fast=options.fail_fast,
            max_parallel=options.max_parallel,
            fsync=config.fsync,
            progress=options.progress,
            blobs=options.blobs,
        )
        ids = record_run(engine, dag, run_id, default, resumed_from, root_run_id or run_id, reasons, options)
        if on_recorded:
            on_recorded(run_id)
        scheduler.attach(ids, reuse, reasons)
        scheduler.execute()
        return run_id
    finally:
        for executor in executors.values():
            executor.shutdown()


def record_run(
    engine: Engine,
    dag: DAG,
    run_id: str,
    executor: str,
    resumed_from: str | None,
    root_run_id: str,
    reasons: dict[str, list[str]] | None,
    options: RunOptions,
) -> dict[str, int]:
    now = time.time()
    run = {
        "id": run_id,
        "workflow": dag.workflow,
        "file": str(Path(dag.file).resolve()),
        "params": _jsonable_params(dag.params),
        "status": "running",
        "created_at": now,
        "started_at": now,
        "host": socket.gethostname(),
        "user": _user(),
        "pid": os.getpid(),
        "heartbeat_at": now,
        "resumed_from": resumed_from,
        "root_run_id": root_run_id,
        "executor": executor,
        "outputs": _with_classes(dag),
        "options": {"use_cache": options.use_cache, "fail_fast": options.fail_fast},
    }
    nodes = [
        {
            "name": name,
            "operator": node.operator.qualname,
            "status": "pending",
            "position": index,
            "executor": node.operator.executor or executor,
            "reasons": (reasons or {}).get(name),
        }
        for index, (name, node) in enumerate(dag.nodes.items())
    ]
    with engine.begin() as conn:
        ids = repo.create_run(conn, run, nodes, dag.edges())
        event = {"run_id": run_id, "node": None, "kind": "run_running", "data": None, "time": now}
        repo.add_events(conn, [event])
        return ids


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def _jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    from flowlib.results import jsonable

    return {key: str(value) if isinstance(value, Path) else jsonable(value) for key, value in params.items()}


def _with_classes(dag: DAG) -> Any:
    """The output spec, with the NamedTuple class of each whole-NamedTuple ref."""

    def walk(spec: Any) -> Any:
        if "ref" in spec:
            node_name, output = spec["ref"]
            op = dag.nodes[node_name].operator
            if output == "return" and op.output_fields:
                return {
                    **spec,
                    "cls": [op.return_type.__module__, op.return_type.__qualname__],
                    "fields": list(op.output_fields),
                }
            return spec
        for key in ("list", "tuple"):
            if key in spec:
                return {key: [walk(item) for item in spec[key]]}
        if "dict" in spec:
            return {"dict": {k: walk(v) for k, v in spec["dict"].items()}}
        if "fields" in spec and isinstance(spec["fields"], dict):
            return {"fields": {k: walk(v) for k, v in spec["fields"].items()}}
        return spec

    return walk(dag.outputs) if dag.outputs is not None else None


__all__ = ["FlowError", "RunOptions", "execute_dag", "open_store"]
