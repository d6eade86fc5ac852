"""Read model of the sweep page. A sweep's trials come from its Optuna study (states such as
`pruned`, values, parameters: `scheduler.sweeps.read`, the shape of `flow sweep status --json`).
Where the study cannot be read (a server installed without the `sweep` extra, a study
removed), the page falls back to what the run database holds: the `sweeps` row and the runs
linked to it (`runs.sweep`, `runs.trial`), their states and objective metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from scheduler.store.models import metrics, runs, sweeps
from scheduler.store.readback import shown_status

STATES = {"succeeded": "complete", "failed": "failed", "interrupted": "failed", "cancelled": "pruned"}


@dataclass
class Trial:
    number: int
    run_id: str
    params: dict[str, Any]
    state: str  # complete | failed | pruned | running
    value: float | None


@dataclass
class Sweep:
    name: str
    workflow: str
    objective: str
    direction: str  # minimize | maximize
    tuned: list[str]  # the parameters the sweep varies
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None


def sweep_data(engine: Engine, reader: Any, name: str) -> Sweep | None:
    """The sweep `name` with its trials, or None when there is no such sweep."""
    found = _from_study(engine, name)
    return found if found is not None else _from_runs(engine, reader, name)


def _from_study(engine: Engine, name: str) -> Sweep | None:
    try:
        from scheduler.sweeps.read import sweep_status
        from scheduler.sweeps.space import SweepError
    except ImportError:  # no optuna here
        return None
    try:
        status = sweep_status(engine, name)
    except (SweepError, SQLAlchemyError):
        return None
    trials = [
        Trial(t["number"], t["run_id"] or "", t["params"], t["state"], t["value"]) for t in status["trials"]
    ]
    if not trials:
        return None
    tuned = list(dict.fromkeys(k for t in trials for k in t.params))
    best = status["best"]
    chosen = next((t for t in trials if best is not None and t.number == best["trial"]), None)
    return Sweep(
        status["name"], status["workflow"], status["objective"], status["direction"], tuned, trials, chosen
    )


def _from_runs(engine: Engine, reader: Any, name: str) -> Sweep | None:
    with engine.connect() as conn:
        try:
            row = conn.execute(select(sweeps).where(sweeps.c.name == name)).first()
        except SQLAlchemyError:  # a database from before sweeps
            conn.rollback()
            row = None
        found = conn.execute(
            select(runs).where(runs.c.sweep == name).order_by(runs.c.trial, runs.c.created_at)
        ).all()
        objective = row.objective if row is not None else ""
        last: dict[str, float] = {}
        if objective and found:
            query = select(metrics.c.run_id, metrics.c.value).where(
                metrics.c.run_id.in_([r.id for r in found]), metrics.c.name == objective
            )
            for run_id, value in conn.execute(query.order_by(metrics.c.id)):
                last[run_id] = value
    if row is None and not found:
        return None
    settings = (row.settings if row is not None else None) or {}
    space = settings.get("space") if isinstance(settings, dict) else None
    trials = []
    for number, run in enumerate(found):
        state = STATES.get(shown_status(run), "running")
        value = last.get(run.id)
        if value is None and state == "complete" and objective:
            value = _output_field(engine, reader, run, objective)
        params = run.params if isinstance(run.params, dict) else {}
        trials.append(Trial(run.trial if run.trial is not None else number, run.id, params, state, value))
    tuned = list(space) if isinstance(space, dict) else _varied([t.params for t in trials])
    for trial in trials:
        trial.params = {k: v for k, v in trial.params.items() if k in tuned}
    direction = row.direction if row is not None else "minimize"
    done = [t for t in trials if t.state == "complete" and t.value is not None]
    best = (max if direction == "maximize" else min)(done, key=lambda t: t.value) if done else None  # type: ignore[arg-type, return-value]
    workflow = row.workflow if row is not None else (found[0].workflow if found else "")
    return Sweep(name, workflow, objective, direction, tuned, trials, best)


def _output_field(engine: Engine, reader: Any, run: Any, key: str) -> float | None:
    from scheduler.store.outputs import run_values

    try:
        value = run_values(engine, reader, run.id, imports=False)
    except Exception:
        return None
    found = value.get(key) if isinstance(value, dict) else None
    return float(found) if isinstance(found, (int, float)) and not isinstance(found, bool) else None


def _varied(params: list[dict[str, Any]]) -> list[str]:
    """Without the sweep's space at hand: the parameters whose values differ across trials."""
    names = sorted({k for p in params for k in p})
    return [n for n in names if len({repr(p.get(n)) for p in params}) > 1]
