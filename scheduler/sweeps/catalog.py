"""The run database's record of sweeps (`sweeps`), and which run is each trial's (`runs.sweep`,
`runs.trial`: a resumed trial's newest run is its run)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from scheduler.store.models import runs, sweeps
from scheduler.store.readback import shown_status
from scheduler.sweeps.space import SweepError

# settings a continued sweep must keep (the others, such as --trials and --parallel, may change)
KEPT = ("space", "params")


@dataclass
class SweepRecord:
    """A sweep as recorded: what it tunes and how (`settings`: space, trials, parallel, sampler,
    pruner, seed, fixed params, executor)."""

    name: str
    workflow: str
    file: str
    objective: str
    direction: str
    storage: str
    settings: dict[str, Any] = field(default_factory=dict)
    created_at: float | None = None


@dataclass(frozen=True)
class TrialRun:
    """The newest run of a trial."""

    run_id: str
    status: str  # as readers see it: a run whose scheduler died reads `interrupted`
    host: str | None
    pid: int | None
    started_at: float | None
    ended_at: float | None


def find(engine: Engine, name: str) -> SweepRecord | None:
    with engine.connect() as conn:
        row = conn.execute(select(sweeps).where(sweeps.c.name == name)).first()
    if row is None:
        return None
    return SweepRecord(**row._mapping)


def require(engine: Engine, name: str) -> SweepRecord:
    record = find(engine, name)
    if record is None:
        with engine.connect() as conn:
            names = list(conn.scalars(select(sweeps.c.name).order_by(sweeps.c.created_at)))
        known = ", ".join(names[-10:]) or "none"
        raise SweepError(f"no sweep named '{name}' in this database; sweeps here: {known}")
    return record


def check_same(old: SweepRecord, new: SweepRecord) -> None:
    """A sweep of an existing name continues it: only with the same workflow, objective and space."""
    differences = [
        what
        for what, a, b in (
            ("workflow", (old.file, old.workflow), (new.file, new.workflow)),
            ("objective", (old.objective, old.direction), (new.objective, new.direction)),
            *((key, old.settings.get(key), new.settings.get(key)) for key in KEPT),
        )
        if a != b
    ]
    if differences:
        raise SweepError(
            f"sweep '{old.name}' exists with another {', '.join(differences)} "
            f"(objective {old.objective}, {old.direction}; space "
            f"{' '.join(f'{k}={v}' for k, v in old.settings.get('space', {}).items())}); "
            "give --name to start a new sweep, or `flow sweep resume` to continue it"
        )


def create(engine: Engine, record: SweepRecord) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(sweeps).values(
                name=record.name,
                workflow=record.workflow,
                file=record.file,
                objective=record.objective,
                direction=record.direction,
                storage=record.storage,
                settings=record.settings,
                created_at=time.time(),
            )
        )


def save_settings(engine: Engine, name: str, settings: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(update(sweeps).where(sweeps.c.name == name).values(settings=settings))


def trial_runs(engine: Engine, name: str) -> dict[int, TrialRun]:
    """Trial number -> its newest run."""
    newest = (
        select(runs.c.trial, func.max(runs.c.created_at).label("created_at"))
        .where(runs.c.sweep == name)
        .group_by(runs.c.trial)
        .subquery()
    )
    query = select(runs).join(
        newest, (runs.c.trial == newest.c.trial) & (runs.c.created_at == newest.c.created_at)
    )
    with engine.connect() as conn:
        rows = conn.execute(query.where(runs.c.sweep == name)).all()
    return {
        row.trial: TrialRun(row.id, shown_status(row), row.host, row.pid, row.started_at, row.ended_at)
        for row in rows
    }
