"""Deployments (a workflow registered with its code snapshot and typed parameters, in versions),
their launches, and cron schedules fired by exactly one server of a pool."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from flowlib.errors import FlowError
from flowlib.store import ArtifactStore
from scheduler.server import queue
from scheduler.server.compiling import CompileFailed, compile_in_subprocess
from scheduler.server.execution import code_root
from scheduler.store import repository as repo
from scheduler.store.models import deployments, runs, schedule_ticks

_D = deployments.c


class UnknownDeployment(FlowError):
    """No deployment has that name."""


def check_schedule(expression: str | None) -> None:
    """A standard five-field cron expression, or a FlowError saying what is wrong."""
    if expression is None:
        return
    from croniter import croniter

    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise FlowError(
            f"schedule {expression!r} is not a five-field cron expression (minute hour day month weekday)"
        )


def deploy(
    engine: Engine,
    *,
    name: str,
    workflow: str,
    file: str,
    snapshot: str,
    parameters: list[dict[str, Any]],
    params: dict[str, Any] | None,
    schedule: str | None,
    user: str,
) -> int:
    """Register a new version of deployment `name`; return its version number (1, 2, ...)."""
    check_schedule(schedule)
    for _ in range(5):  # two deploys of one name at once: one gets the next number
        try:
            with engine.begin() as conn:
                version = (conn.scalar(select(func.max(_D.version)).where(_D.name == name)) or 0) + 1
                conn.execute(
                    insert(deployments).values(
                        name=name,
                        version=version,
                        workflow=workflow,
                        file=file,
                        snapshot=snapshot,
                        parameters=parameters,
                        params=params or {},
                        schedule=schedule,
                        created_at=time.time(),
                        user=user,
                    )
                )
            return version
        except IntegrityError:
            continue
    raise FlowError(f"deployment '{name}' is being deployed by others: try again")


def latest(engine: Engine, name: str) -> Any:
    with engine.connect() as conn:
        row = conn.execute(
            select(deployments).where(_D.name == name).order_by(_D.version.desc()).limit(1)
        ).first()
    if row is None or row.deleted:
        raise UnknownDeployment(f"no deployment named '{name}'")
    return row


def listing(engine: Engine) -> list[dict[str, Any]]:
    """The latest version of every deployment, by name."""
    newest = select(_D.name, func.max(_D.version).label("version")).group_by(_D.name).subquery()
    query = select(deployments).join(newest, (_D.name == newest.c.name) & (_D.version == newest.c.version))
    with engine.connect() as conn:
        rows = conn.execute(query.where(_D.deleted.is_(False)).order_by(_D.name)).all()
    return [shown(row) for row in rows]


def shown(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "version": row.version,
        "workflow": row.workflow,
        "schedule": row.schedule,
        "params": row.parameters,
        "fixed": row.params or {},
        "file": row.file,
        "created_at": row.created_at,
        "user": row.user,
    }


def delete(engine: Engine, name: str) -> None:
    latest(engine, name)
    with engine.begin() as conn:
        conn.execute(update(deployments).where(_D.name == name).values(deleted=True))


@dataclass
class Launcher:
    """Compiles a deployment's workflow (in a subprocess) and queues its run."""

    engine: Engine
    store: ArtifactStore
    snapshots: Path
    executor: str

    def launch(self, name: str, params: dict[str, Any], user: str, *, fixed_only: bool = False) -> str:
        """Queue a run of the latest version of `name`; bad parameters raise CompileFailed(bad_input).
        A string value is parsed as `-p` parses it, any other JSON value as a params file's.
        A pipeline that fails to load gives a failed run, whose id is returned."""
        row = latest(self.engine, name)
        root = code_root(self.store, row.snapshot, self.snapshots)
        given = {} if fixed_only else params
        text = {key: value for key, value in given.items() if isinstance(value, str)}
        typed = {key: value for key, value in given.items() if not isinstance(value, str)}
        try:
            plan = compile_in_subprocess(root, row.file, row.workflow, text, {**(row.params or {}), **typed})
        except CompileFailed as exc:
            if exc.bad_input:
                raise
            return self._failed(row, str(exc), user, params)
        return queue.enqueue(
            self.engine,
            plan,
            snapshot=row.snapshot,
            user=user,
            executor=self.executor,
            deployment=row.name,
            deployment_version=row.version,
        )

    def _failed(self, row: Any, error: str, user: str, params: dict[str, Any]) -> str:
        """A launch whose pipeline could not even load: a failed run, with that as its error."""
        from scheduler.runs import new_run_id

        run_id, now = new_run_id(), time.time()
        with self.engine.begin() as conn:
            conn.execute(
                insert(runs).values(
                    id=run_id,
                    workflow=row.workflow,
                    file=row.file,
                    params={**(row.params or {}), **params},
                    status="failed",
                    created_at=now,
                    ended_at=now,
                    host="-",
                    user=user,
                    root_run_id=run_id,
                    executor=self.executor,
                    error=f"the pipeline failed to load: {error}",
                    snapshot=row.snapshot,
                    deployment=row.name,
                    deployment_version=row.version,
                )
            )
            repo.add_events(
                conn, [{"run_id": run_id, "node": None, "kind": "run_failed", "data": None, "time": now}]
            )
        return run_id

    def fire_due(self, user: str, now: float | None = None) -> list[str]:
        """Run each scheduled deployment's latest due time that has not run yet (one missed while no
        server was up runs once, not once per missed tick). The claim is a row: one server wins."""
        from croniter import croniter

        now = time.time() if now is None else now
        started = []
        for item in listing(self.engine):
            if not item["schedule"]:
                continue
            due = croniter(item["schedule"], datetime.fromtimestamp(now, timezone.utc)).get_prev(float)
            if due < item["created_at"]:
                continue  # deployed after that tick: the next one is its first
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(schedule_ticks).values(deployment=item["name"], due_at=due, created_at=now)
                    )
            except IntegrityError:
                continue  # another server (or an earlier pass) ran it
            run_id = self.launch(item["name"], {}, user, fixed_only=True)
            with self.engine.begin() as conn:
                conn.execute(
                    update(schedule_ticks)
                    .where(schedule_ticks.c.deployment == item["name"], schedule_ticks.c.due_at == due)
                    .values(run_id=run_id)
                )
            started.append(run_id)
        return started
