"""The API of sweeps (read only: a sweep runs where `flow sweep` runs): list them, and one
sweep's trials as `flow sweep status --json` gives them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import select

from scheduler.server import schemas
from scheduler.server.auth import User
from scheduler.server.context import ServerContext
from scheduler.store.models import sweeps
from scheduler.ui.sweeps import sweep_data


def router(ctx: ServerContext, current_user: Any) -> APIRouter:
    api = APIRouter(prefix="/api", responses=schemas.ERRORS)
    Caller = Depends(current_user)

    @api.get("/sweeps", response_model=list[schemas.SweepSummary])
    def listing(_: User = Caller) -> list[dict[str, Any]]:
        """Every sweep recorded in this database, oldest first."""
        columns = (
            sweeps.c.name,
            sweeps.c.workflow,
            sweeps.c.objective,
            sweeps.c.direction,
            sweeps.c.created_at,
        )
        with ctx.engine.connect() as conn:
            rows = conn.execute(select(*columns).order_by(sweeps.c.created_at))
            return [dict(row._mapping) for row in rows]

    @api.get("/sweeps/{name}", response_model=schemas.SweepStatus)
    def status(name: str, _: User = Caller) -> dict[str, Any]:
        """A sweep and its trials (the `flow sweep status --json` object)."""
        try:
            from scheduler.sweeps.read import sweep_status
            from scheduler.sweeps.space import SweepError
        except ImportError:  # a server without the `sweep` extra reads the trials from the runs
            return _from_runs(ctx, name)
        try:
            return sweep_status(ctx.engine, name)
        except SweepError as exc:
            raise HTTPException(404, str(exc)) from None

    return api


def _from_runs(ctx: ServerContext, name: str) -> dict[str, Any]:
    found = sweep_data(ctx.engine, ctx.reader(), name)
    if found is None:
        raise HTTPException(404, f"no sweep named '{name}' in this database")
    trials = [
        {
            "number": t.number,
            "run_id": t.run_id or None,
            "params": t.params,
            "state": t.state,
            "value": t.value,
        }
        for t in found.trials
    ]
    chosen = found.best
    best = None if chosen is None else {
        "trial": chosen.number, "run_id": chosen.run_id, "params": chosen.params, "value": chosen.value
    }  # fmt: skip
    return {
        "name": found.name,
        "workflow": found.workflow,
        "objective": found.objective,
        "direction": found.direction,
        "trials": trials,
        "best": best,
    }
