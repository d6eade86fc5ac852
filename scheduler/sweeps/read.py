"""Read models of a sweep: `flow sweep status` / `best`, and the web UI's sweep page (no user code
is imported: the trials' parameters and values come from the study, their runs from the database)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from scheduler.sweeps import catalog
from scheduler.sweeps.space import SweepError
from scheduler.sweeps.study import open_study, storage_url, trial_state


def _study_trials(engine: Engine, record: catalog.SweepRecord, study: Any = None) -> list[Any]:
    if study is None:
        try:
            study = open_study(record.name, storage_url(engine.url.render_as_string(hide_password=False)))
        except SweepError:
            return []  # recorded, and stopped before its first trial
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def _trial(trial: Any, runs: dict[int, catalog.TrialRun]) -> dict[str, Any]:
    run = runs.get(trial.number)
    state = trial_state(trial)
    return {
        "number": trial.number,
        "run_id": run.run_id if run is not None else None,
        "params": dict(trial.params),
        "state": state,
        "value": trial.value if state in ("complete", "pruned") else None,
        "error": trial.user_attrs.get("error") if state == "failed" else None,
    }


def best_of(trials: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    """The best complete trial as `flow sweep best --json` prints it (the earliest of equals), or None."""
    complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    if not complete:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    best = min(complete, key=lambda t: (sign * t["value"], t["number"]))
    return {
        "trial": best["number"],
        "run_id": best["run_id"],
        "params": best["params"],
        "value": best["value"],
    }


def sweep_status(engine: Engine, name: str, *, study: Any = None) -> dict[str, Any]:
    """`flow sweep status --json`: the sweep, each trial (number, run, params, state, value) and the
    best (`study`: the sweep's study, when the caller has it open)."""
    record = catalog.require(engine, name)
    runs = catalog.trial_runs(engine, name)
    trials = [_trial(t, runs) for t in _study_trials(engine, record, study)]
    return {
        "name": record.name,
        "workflow": record.workflow,
        "objective": record.objective,
        "direction": record.direction,
        "trials": trials,
        "best": best_of(trials, record.direction),
    }


def sweep_view(engine: Engine, name: str) -> dict[str, Any]:
    """Everything the UI's sweep page draws: the trials table (with their runs' times), the
    objective over trials (with the best so far), and the axes and lines of a parallel-coordinates
    view of the parameters against the objective."""
    record = catalog.require(engine, name)
    runs = catalog.trial_runs(engine, name)
    study_trials = _study_trials(engine, record)
    rows = []
    for trial in study_trials:
        row = _trial(trial, runs)
        run = runs.get(trial.number)
        started = run.started_at if run is not None else None
        ended = run.ended_at if run is not None else None
        row.update(
            run_status=run.status if run is not None else None,
            started_at=started,
            ended_at=ended,
            duration_s=round(ended - started, 3) if started is not None and ended is not None else None,
            last_step=trial.last_step,
        )
        rows.append(row)
    sign = -1.0 if record.direction == "maximize" else 1.0
    curve, best = [], None
    for row in rows:
        if row["state"] != "complete":
            continue
        if best is None or sign * row["value"] < sign * best:
            best = row["value"]
        curve.append({"number": row["number"], "value": row["value"], "best_so_far": best})
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return {
        "name": record.name,
        "workflow": record.workflow,
        "file": record.file,
        "objective": record.objective,
        "direction": record.direction,
        "settings": record.settings,
        "counts": counts,
        "best": best_of(rows, record.direction),
        "trials": rows,
        "objective_over_trials": curve,
        "parameters": _axes(study_trials, record.settings.get("space") or {}),
        "lines": [
            {"number": r["number"], "state": r["state"], "params": r["params"], "value": r["value"]}
            for r in rows
            if r["state"] in ("complete", "pruned") and r["value"] is not None
        ],
    }


def _axes(trials: list[Any], space: dict[str, str]) -> list[dict[str, Any]]:
    """One axis per tuned parameter, from the distributions the trials were sampled from."""
    from optuna import distributions as d

    found: dict[str, Any] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            found.setdefault(name, dist)
    axes = []
    for name in list(space) + [n for n in found if n not in space]:
        dist = found.get(name)
        axis: dict[str, Any] = {"name": name, "spec": space.get(name)}
        if isinstance(dist, d.CategoricalDistribution):
            axis.update(kind="choice", choices=list(dist.choices))
        elif isinstance(dist, (d.IntDistribution, d.FloatDistribution)):
            axis.update(kind="log" if dist.log else "linear", low=dist.low, high=dist.high)
        axes.append(axis)
    return axes
