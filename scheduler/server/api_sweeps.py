"""The API of sweeps: list them, one sweep's trials as `flow sweep status --json` gives them, and
what `flow sweep --server` asks as it drives a sweep whose study is kept here (see sweep_books):
record the sweep, ask for a trial, queue its run, report its steps, tell how it ended."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path
from sqlalchemy import select

from flowlib.errors import FlowError
from scheduler.server import schemas
from scheduler.server.auth import User
from scheduler.server.context import ServerContext
from scheduler.server.sweep_books import (
    NoSuchSweep,
    SweepBooks,
    SweepConflict,
    check_space,
    owner_of,
    settings_of,
)
from scheduler.store.models import sweeps
from scheduler.ui.sweeps import sweep_data

SWEEP_NAME = Path(pattern=schemas.NAME)
NUMBER = Path(ge=0, le=10_000_000)


def router(ctx: ServerContext, current_user: Any) -> APIRouter:
    api = APIRouter(prefix="/api", responses=schemas.ERRORS)
    Caller = Depends(current_user)
    books = SweepBooks(ctx.engine)

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

    @api.post("/sweeps", status_code=201, response_model=schemas.SweepStatus)
    def create(body: schemas.SweepCreate, user: User = Caller) -> dict[str, Any]:
        """Record a sweep whose trials the caller will submit here, or continue the one of that
        name (same workflow, objective and space); its study is kept beside this database."""
        from scheduler.sweeps.catalog import SweepRecord
        from scheduler.sweeps.read import sweep_status
        from scheduler.sweeps.study import make_sampler, shown_storage

        with _answers():  # everything is checked before anything is recorded
            check_space(body.distributions, body.space, body.grid)
            if body.sampler == "grid" and body.grid is None:
                raise SweepConflict("--sampler grid: give the grid's values")
            make_sampler(body.sampler, body.seed, body.grid)
            _check_file(body.file)
            record = SweepRecord(
                name=body.name,
                workflow=body.workflow,
                file=body.file,
                objective=body.objective,
                direction=body.direction,
                storage=shown_storage(books.storage()),
                settings=settings_of(body),
            )
            books.register(record, user.name, user.admin)
            books.book(books.record(body.name))  # the study exists from here on
            return sweep_status(ctx.engine, body.name)

    @api.get("/sweeps/{name}/record", response_model=schemas.SweepRecordObject)
    def record(name: str = SWEEP_NAME, _: User = Caller) -> dict[str, Any]:
        """What a sweep was asked for (`flow sweep resume --server` rebuilds its trials from it)."""
        with _answers():
            found = books.record(name)
        settings = {k: v for k, v in found.settings.items() if k != "user"}
        return {
            "name": found.name,
            "workflow": found.workflow,
            "file": found.file,
            "objective": found.objective,
            "direction": found.direction,
            "settings": settings,
        }

    @api.post("/sweeps/{name}/trials", status_code=201, response_model=schemas.AskedTrial)
    def ask(name: str = SWEEP_NAME, user: User = Caller) -> dict[str, Any]:
        """A new trial: the parameters the sampler proposes."""
        with _answers():
            asked = _book(name, user).ask()
        return {"number": asked.number, "params": asked.params}

    @api.post(
        "/sweeps/{name}/trials/{number}/runs",
        status_code=201,
        response_model=schemas.RunObject,
        response_model_exclude_unset=True,
    )
    def trial_run(
        body: schemas.TrialRun, name: str = SWEEP_NAME, number: int = NUMBER, user: User = Caller
    ) -> dict[str, Any]:
        """Queue a trial's run (its workflow compiled with the trial's parameters)."""
        from scheduler.server.api import queue_plan

        with _answers():
            _running(name, number, user)
            executor = books.record(name).settings.get("executor")
        return queue_plan(
            ctx, body.plan, body.snapshot, user=user.name, executor=executor, sweep=name, trial=number
        )

    @api.post("/sweeps/{name}/trials/{number}/steps", response_model=schemas.Pruning)
    def steps(
        body: schemas.TrialSteps, name: str = SWEEP_NAME, number: int = NUMBER, user: User = Caller
    ) -> dict[str, Any]:
        """Report steps of a running trial's objective; the answer says whether the pruner stops it."""
        with _answers():
            return {"prune": _running(name, number, user).report(number, body.points)}

    @api.post("/sweeps/{name}/trials/{number}/outcome", response_model=schemas.SweepTrial)
    def outcome(
        body: schemas.TrialOutcome, name: str = SWEEP_NAME, number: int = NUMBER, user: User = Caller
    ) -> dict[str, Any]:
        """Tell how a trial ended: complete (with its objective value), failed (why) or pruned."""
        from scheduler.sweeps.read import sweep_status

        with _answers():
            book = _running(name, number, user)
            if body.state == "complete":
                if body.value is None or not math.isfinite(body.value):
                    raise SweepConflict("a complete trial needs a finite value")
                book.complete(number, body.value)
            elif body.state == "failed":
                book.fail(number, body.error or "failed")
            else:
                book.prune(number)
            trials = sweep_status(ctx.engine, name)["trials"]
        return next(t for t in trials if t["number"] == number)

    def _book(name: str, user: User) -> Any:
        found = books.record(name)
        owner = owner_of(found)
        if (owner is not None and not user.may_change(owner)) or (owner is None and not user.admin):
            raise PermissionError(f"sweep '{name}' belongs to {owner or 'the database it runs on'}")
        return books.book(found)

    def _running(name: str, number: int, user: User) -> Any:
        """The book of a sweep the caller may drive, whose trial `number` is still running."""
        from optuna.trial import TrialState

        book = _book(name, user)
        for trial in book.study.get_trials(deepcopy=False):
            if trial.number == number:
                if trial.state not in (TrialState.RUNNING, TrialState.WAITING):
                    raise SweepConflict(f"trial {number} of sweep '{name}' already ended")
                return book
        raise NoSuchSweep(f"sweep '{name}' has no trial {number}")

    return api


def _check_file(file: str) -> None:
    """The pipeline's path inside the project (a resume joins it onto the project's folder)."""
    path = PurePosixPath(file)
    if path.is_absolute() or ".." in path.parts or "\\" in file:
        raise SweepConflict(f"file {file!r}: give the pipeline's path relative to the project's root")


@contextlib.contextmanager
def _answers() -> Iterator[None]:
    """A sweep's refusals as HTTP answers: 404 unknown, 403 not the owner's, 409 does not fit, 400
    a server without Optuna."""
    try:
        yield
    except ImportError:
        raise HTTPException(
            400, "this server cannot keep sweeps: install flowlib[sweep] where it runs"
        ) from None
    except NoSuchSweep as exc:
        raise HTTPException(404, str(exc)) from None
    except PermissionError as exc:
        raise HTTPException(403, str(exc)) from None
    except (SweepConflict, FlowError, ValueError, KeyError, RuntimeError) as exc:
        raise HTTPException(409, str(exc).strip("'\"")) from None


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
