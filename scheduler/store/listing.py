"""Read model of runs as lists show them (`flow runs --json`, GET /api/runs, the runs page)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row

from scheduler.store import repository as repo
from scheduler.store.readback import result_of, shown_status

STORED = {
    "interrupted": ["running", "pending", "interrupted"],
    "running": ["running"],
    "pending": ["pending"],
}


def extra_fields(run: Row) -> dict[str, Any]:
    """What a run object shows beside RunResult.to_json()."""
    return {
        "created_at": run.created_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "file": run.file,
        "params": run.params,
        "user": run.user,
        "priority": run.priority,
        "deployment": run.deployment,
        "deployment_version": run.deployment_version,
        "sweep": run.sweep,
        "trial": run.trial,
    }


def find_runs(
    engine: Engine, *, status: str | None = None, limit: int = 20, offset: int = 0, **filters: Any
) -> list[Row]:
    """Run rows, newest first; `status` as readers see it (a dead scheduler's run is interrupted)."""
    found: list[Row] = []
    skipped = 0
    with engine.connect() as conn:
        for row in repo.list_runs(
            conn, statuses=STORED.get(status or "", [status] if status else None), **filters
        ):
            if status is not None and shown_status(row) != status:
                continue
            if skipped < offset:
                skipped += 1
                continue
            found.append(row)
            if len(found) == limit:
                break
    return found


def run_objects(
    engine: Engine, reader: Any, rows: list[Row], *, imports: bool = True
) -> list[dict[str, Any]]:
    """The runs as JSON objects (without nodes)."""
    shown = []
    for row in rows:
        result = result_of(row, [], reader, engine, with_nodes=False, classes=False, imports=imports)
        shown.append({**result.to_json(with_nodes=False), **extra_fields(row)})
    return shown


def run_with_nodes(engine: Engine, reader: Any, run_id: str, *, imports: bool = True) -> dict[str, Any]:
    """A run as `flow status --json` shows it (GET /api/runs/{id} too)."""
    from scheduler.store.readback import load_run

    result = load_run(engine, reader, run_id, classes=False, imports=imports)
    with engine.connect() as conn:
        run = repo.require_run(conn, result.run_id)
    return {**result.to_json(), **extra_fields(run)}
