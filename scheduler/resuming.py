"""`flow resume`: rebuild a run's workflow with the code as it is now, plan what to reuse, run the rest."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Row, update

from flowlib.compile import compile_dag
from flowlib.config import Config
from flowlib.loading import select_workflow
from flowlib.params import parse_params
from flowlib.plan import Plan
from scheduler.engine.resume import Step, plan_resume, reuse_of
from scheduler.runs import RunOptions, RunStillActive, connect, execute_here, open_store
from scheduler.store import repository as repo
from scheduler.store.batch import Session
from scheduler.store.blobs import Blobs
from scheduler.store.lookups import StoreLookups
from scheduler.store.models import nodes, runs
from scheduler.store.readback import scheduler_alive

OLD_COLUMNS = ("status", "attempts", "fingerprint", "inputs", "outputs", "cache_key")


def rebuild(run: Row) -> Plan:
    """Build and compile the run's workflow again from its file and parameters, with the code as it is now."""
    wf = select_workflow(run.file, run.workflow)
    return compile_dag(wf.build(**parse_params(wf, {}, run.params or {})))


def plan_for(run_id: str, config: Config, *, reuse_succeeded: bool = False) -> tuple[Row, Plan, list[Step]]:
    """The run to resume, the plan of its workflow now, and what a resume would do, node by node."""
    engine = connect(config)
    with engine.connect() as conn:
        run = repo.require_run(conn, run_id)
    if scheduler_alive(run):
        raise RunStillActive(
            f"run {run.id} is still running (scheduler pid {run.pid} on host {run.host}); "
            "wait for it or `flow cancel` it first"
        )
    plan = rebuild(run)
    return run, plan, resume_steps(engine, open_store(config), run, plan, reuse_succeeded=reuse_succeeded)


def resume_steps(
    engine: Any, store: Any, run: Row, plan: Plan, *, reuse_succeeded: bool = False
) -> list[Step]:
    """What resuming `run` with `plan` would do, node by node (records nothing)."""
    with engine.connect() as conn:
        old = {node.name: {c: getattr(node, c) for c in OLD_COLUMNS} for node in repo.nodes_of(conn, run.id)}
        parts = repo.fingerprint_parts(conn, [n["fingerprint"] for n in old.values()])
    session = Session(engine)
    try:
        lookups = StoreLookups(session, store, Blobs(engine))
        return plan_resume(plan, old, parts, lookups, reuse_succeeded=reuse_succeeded)
    finally:
        session.stop()


def mark_interrupted(engine: Any, run: Row) -> None:
    """A run whose scheduler died, and its unfinished nodes, are recorded `interrupted`."""
    if run.status not in ("running", "pending", "queued"):
        return
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            update(nodes)
            .where(nodes.c.run_id == run.id, nodes.c.status.in_(("pending", "queued", "running")))
            .values(status="interrupted", ended_at=now)
        )
        conn.execute(
            update(runs)
            .where(runs.c.id == run.id)
            .values(status="interrupted", error="interrupted: its scheduler died", ended_at=now)
        )
        repo.add_events(
            conn, [{"run_id": run.id, "node": None, "kind": "run_interrupted", "data": None, "time": now}]
        )


def resume_here(
    run_id: str,
    config: Config,
    *,
    executor: str | None = None,
    reuse_succeeded: bool = False,
    progress: Any = None,
    on_recorded: Any = None,
) -> str:
    """Resume `run_id` in this process: record a new run linked to it, reuse what the plan keeps,
    run the rest; return the new run's id."""
    run, plan, steps = plan_for(run_id, config, reuse_succeeded=reuse_succeeded)
    mark_interrupted(connect(config), run)
    options = RunOptions(
        executor=executor or run.executor,
        use_cache=True,
        progress=progress,
        on_recorded=on_recorded,
        reuse_succeeded=reuse_succeeded,
    )
    new_id, _ = execute_here(
        plan,
        config,
        options,
        resumed_from=run.id,
        root_run_id=run.root_run_id or run.id,
        reuse=reuse_of(steps),
        reasons={step.name: step.reasons for step in steps},
    )
    return new_id
