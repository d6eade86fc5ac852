"""Start, record and resume runs of plans: what `flowlib.run`, `flowlib.resume` and the CLI share."""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from executors.base import Executor
from executors.registry import executor_class
from flowlib.config import Config
from flowlib.errors import ConfigError, FlowError
from flowlib.plan import Plan
from flowlib.store import ArtifactStore

if TYPE_CHECKING:  # SQLAlchemy loads while the workers start, not before
    from sqlalchemy import Connection, Engine


@dataclass
class RunOptions:
    executor: str | None = None
    use_cache: bool = True
    fail_fast: bool = False
    max_parallel: int | None = None
    progress: Callable[[str, str, dict[str, Any]], None] | None = None
    on_recorded: Callable[[str], None] | None = None
    reuse_succeeded: bool = False


class RunStillActive(FlowError):
    """The run's scheduler is alive; resuming it now would run nodes twice."""


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


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
    from scheduler.store import db

    try:
        return db.connect(config.db, upgrade=upgrade)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from {config.origin('db')})") from None


# -- executors ---------------------------------------------------------------------------------------
def executor_names(plan: Plan, default: str) -> set[str]:
    return {op.executor or default for op in plan.operators.values()} or {default}


def start_executors(names: set[str], config: Config) -> dict[str, Executor]:
    started: dict[str, Executor] = {}
    try:
        for name in sorted(names):
            try:
                cls = executor_class(name)
            except ConfigError as exc:
                origin = config.origin("executor") if name == config.executor else "an operator's executor="
                raise ConfigError(f"{exc} (from {origin})") from None
            executor = cls()
            executor.start(config.executor_settings(name))
            started[name] = executor
    except BaseException:
        for executor in started.values():
            executor.shutdown()
        raise
    return started


def check_resources(plan: Plan, executors: dict[str, Executor], default: str) -> None:
    """Refuse, before anything is recorded, a request no executor here could ever meet."""
    sites = {}
    for node in plan.nodes:
        sites.setdefault(node.op, (node.site, node.name))
    reasons: dict[tuple, str | None] = {}  # operators that ask alike: ask each executor once
    for key, op in plan.operators.items():
        name = op.executor or default
        ask = (name, op.resources, op.distributed)
        if ask not in reasons:
            reasons[ask] = executors[name].refuses(op.resources, op.distributed)
        reason = reasons[ask]
        if reason is not None:
            site, node = sites.get(key, ("", op.qualname))
            where = f"{site}: " if site else ""
            raise ConfigError(f"{where}operator '{op.qualname}' (node '{node}') {reason}")


# -- recording ------------------------------------------------------------------------------------------
def record_run(
    conn: Connection,
    plan: Plan,
    run_id: str,
    *,
    status: str,
    executor: str,
    root_run_id: str,
    resumed_from: str | None = None,
    reasons: dict[str, list[str]] | None = None,
    options: dict[str, Any] | None = None,
    **columns: Any,
) -> dict[str, int]:
    """Record a run of `plan` (its plan, nodes and edges); return node name -> row id."""
    from scheduler.store import repository as repo

    now = time.time()
    text = plan.dumps()
    digest = hashlib.sha256(text.encode()).hexdigest()
    repo.save_plan(conn, digest, text)
    run = {
        "id": run_id,
        "workflow": plan.workflow,
        "file": str(os.path.join(plan.project_root, plan.file)),
        "params": plan.params,
        "status": status,
        "created_at": now,
        "started_at": now if status == "running" else None,
        "host": socket.gethostname(),
        "user": columns.pop("user", None) or os_user(),
        "pid": os.getpid() if status == "running" else None,
        "heartbeat_at": now,
        "resumed_from": resumed_from,
        "root_run_id": root_run_id,
        "executor": executor,
        "outputs": plan.outputs,
        "options": options or {},
        "plan_digest": digest,
        **columns,
    }
    node_rows = [
        {
            "name": node.name,
            "operator": plan.operators[node.op].qualname,
            "status": "pending",
            "position": index,
            "executor": plan.operators[node.op].executor or executor,
            "reasons": (reasons or {}).get(node.name),
        }
        for index, node in enumerate(plan.nodes)
    ]
    edges = [(src, node.name) for node in plan.nodes for src in node.upstream()]
    ids = repo.create_run(conn, run, node_rows, edges)
    kind = "run_running" if status == "running" else "run_" + status
    repo.add_events(conn, [{"run_id": run_id, "node": None, "kind": kind, "data": None, "time": now}])
    return ids


# -- executing here ------------------------------------------------------------------------------------
@dataclass
class Launch:
    """One run to record and execute here: its plan, and what a resume carries over."""

    plan: Plan
    resumed_from: str | None = None
    root_run_id: str | None = None
    reuse: dict[str, dict[str, Any]] | None = None
    reasons: dict[str, list[str]] | None = None


def execute_here(
    plan: Plan,
    config: Config,
    options: RunOptions,
    *,
    executors: dict[str, Executor] | None = None,
    resumed_from: str | None = None,
    root_run_id: str | None = None,
    reuse: dict[str, dict[str, Any]] | None = None,
    reasons: dict[str, list[str]] | None = None,
) -> tuple[str, Any]:
    """Record a run of `plan`, execute it in this process to its end; return (run id, its Blobs).

    `executors` already started are used, and shut down at the end.
    """
    launch = Launch(plan, resumed_from, root_run_id, reuse, reasons)
    run_ids, blobs = execute_many([launch], config, options, executors=executors)
    return run_ids[0], blobs


def execute_many(
    launches: list[Launch],
    config: Config,
    options: RunOptions,
    *,
    executors: dict[str, Executor] | None = None,
) -> tuple[list[str], Any]:
    """Record several runs and execute them at once in this process, over one set of executors
    and one account of their capacity; return (their run ids, the Blobs they shared)."""
    from scheduler.drivers.local import run_in_foreground

    default = options.executor or config.executor
    names = set().union(*(executor_names(launch.plan, default) for launch in launches))
    executors = executors if executors is not None else start_executors(names, config)
    try:
        engine = connect(config)
        store = open_store(config)
        for launch in launches:
            check_resources(launch.plan, executors, default)
        recorded = []
        for launch in launches:
            run_id = new_run_id()
            with engine.begin() as conn:
                ids = record_run(
                    conn,
                    launch.plan,
                    run_id,
                    status="running",
                    executor=default,
                    root_run_id=launch.root_run_id or run_id,
                    resumed_from=launch.resumed_from,
                    reasons=launch.reasons,
                    options={
                        "use_cache": options.use_cache,
                        "fail_fast": options.fail_fast,
                        **({"reuse_succeeded": True} if options.reuse_succeeded else {}),
                    },
                )
            recorded.append((launch, run_id, ids))
            if options.on_recorded:
                options.on_recorded(run_id)
        blobs = run_in_foreground(
            recorded, engine=engine, store=store, config=config, executors=executors, options=options
        )
        return [run_id for _, run_id, _ in recorded], blobs
    finally:
        for executor in executors.values():
            executor.shutdown()
