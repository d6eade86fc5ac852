"""Start, continue and resume sweeps: everything is checked (space, parameters, settings, a build of
the workflow) before anything is recorded or run; then the study, the sweep's record and the loop."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowlib.compile import jsonable_params
from flowlib.config import Config
from flowlib.loading import select_workflow
from flowlib.params import parse_params
from flowlib.workflows import Workflow
from scheduler.runs import connect
from scheduler.sweeps import catalog
from scheduler.sweeps import study as studies
from scheduler.sweeps.book import StudyBook
from scheduler.sweeps.launch import Launcher, LocalLauncher
from scheduler.sweeps.loop import SweepLoop
from scheduler.sweeps.read import sweep_status
from scheduler.sweeps.space import Dimension, SweepError, grid_size, grid_space, parse_space
from scheduler.sweeps.trials import TrialPlans, shared_nodes


@dataclass
class SweepRequest:
    """What `flow sweep FILE` and `flowlib.sweep` ask for (`params`: the fixed parameters, typed)."""

    objective: str
    space: Mapping[str, Any]
    direction: str = "minimize"
    trials: int = 20
    parallel: int = 1
    sampler: str = "tpe"
    pruner: str = "none"
    seed: int | None = None
    name: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    executor: str | None = None


Report = Callable[[str], None]


def start_sweep(
    wf: Workflow, request: SweepRequest, config: Config, *, report: Report | None = None
) -> dict[str, Any]:
    """Run a new sweep of `wf`, or continue the one of that name; return its status (read.sweep_status)."""
    check_request(request)
    dims = parse_space(wf, request.space, request.params)
    name = request.name or wf.name
    settings = settings_for(request, dims)
    engine = connect(config)
    record = catalog.find(engine, name)
    new = catalog.SweepRecord(
        name=name,
        workflow=wf.name,
        file=os.path.abspath(wf.file),
        objective=request.objective,
        direction=request.direction,
        storage=studies.shown_storage(studies.storage_url(config.db)),
        settings=settings,
    )
    if record is not None:
        catalog.check_same(record, new)
    return _drive(new, wf, dims, request.params, config, report, exists=record is not None)


def resume_sweep(name: str, config: Config, *, report: Report | None = None) -> dict[str, Any]:
    """Continue a sweep as it was asked for: unfinished trials resumed, then new ones up to its count."""
    record = catalog.require(connect(config), name)
    wf = select_workflow(record.file, record.workflow)
    settings = record.settings
    fixed = parse_params(wf, {}, settings.get("params") or {})
    dims = parse_space(wf, settings["space"], fixed)
    return _drive(record, wf, dims, fixed, config, report, exists=True)


def settings_for(request: SweepRequest, dims: Mapping[str, Dimension]) -> dict[str, Any]:
    """What a sweep records of how it was asked for."""
    return {
        "space": {n: dim.spec for n, dim in dims.items()},
        "params": jsonable_params(dict(request.params)),
        "trials": request.trials,
        "parallel": request.parallel,
        "sampler": request.sampler,
        "pruner": request.pruner,
        "seed": request.seed,
        "executor": request.executor,
    }


def check_request(request: SweepRequest) -> None:
    if not request.objective or not request.objective.strip():
        raise SweepError("--objective names the output field or metric to tune for")
    for flag, value, allowed in (
        ("--direction", request.direction, studies.DIRECTIONS),
        ("--sampler", request.sampler, studies.SAMPLERS),
        ("--pruner", request.pruner, studies.PRUNERS),
    ):
        if value not in allowed:
            raise SweepError(f"{flag} {value}: expected one of {', '.join(allowed)}")
    if request.trials < 1 or request.parallel < 1:
        raise SweepError("--trials and --parallel must be at least 1")
    if request.name is not None and not request.name.strip():
        raise SweepError("--name must not be empty")


def _drive(
    record: catalog.SweepRecord,
    wf: Workflow,
    dims: Mapping[str, Dimension],
    fixed: Mapping[str, Any],
    config: Config,
    report: Report | None,
    *,
    exists: bool,
) -> dict[str, Any]:
    settings = record.settings
    grid = grid_size(dims) if settings["sampler"] == "grid" else None
    plans = TrialPlans(wf, fixed)
    first, last = plans.probes(dims)
    engine = connect(config)
    _refuse_live(engine, record.name)
    pruning = settings["pruner"] != "none"
    watch = record.objective if pruning else None
    launcher: Launcher = LocalLauncher(config, first, executor=settings.get("executor"), watch=watch)
    try:
        storage = studies.storage_url(config.db)
        study = studies.open_study(
            record.name,
            storage,
            direction=record.direction,
            pruner=studies.make_pruner(settings["pruner"]),
        )
        started = len(study.get_trials(deepcopy=False))
        values = grid_space(dims) if settings["sampler"] == "grid" else None
        study.sampler = studies.make_sampler(
            settings["sampler"], settings.get("seed"), values, started=started
        )
        if exists:
            catalog.save_settings(engine, record.name, settings)
        else:
            catalog.create(engine, record)
        SweepLoop(
            name=record.name,
            book=StudyBook(study, {name: dim.distribution() for name, dim in dims.items()}),
            plans=plans,
            objective=record.objective,
            trials=settings["trials"],
            parallel=settings["parallel"],
            launcher=launcher,
            shared=shared_nodes(first, last),
            pruning=pruning,
            grid_points=grid,
            report=report or (lambda line: None),
        ).run()
    finally:
        launcher.close()
    return sweep_status(engine, record.name, study=study)


def _refuse_live(engine: Any, name: str) -> None:
    """Two processes must never drive one sweep: refuse while a trial's run has a live scheduler."""
    for number, run in sorted(catalog.trial_runs(engine, name).items()):
        if run.status in ("running", "pending"):
            raise SweepError(
                f"sweep '{name}' is still running: trial {number} (run {run.run_id}) is executed by "
                f"pid {run.pid} on {run.host}; wait for it or `flow cancel {run.run_id}`"
            )
