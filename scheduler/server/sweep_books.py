"""The studies of sweeps whose trials are submitted to this server (`flow sweep --server`).

The sweep's loop runs where `flow sweep` runs (it compiles each trial there, as `flow submit`
does); its study is kept here, in Optuna's storage beside the server's database, so the trials,
`flow sweep status` and the web UI read one record. The client asks this server for each trial,
submits the trial's run to the pool, reports the objective's steps (the pruner answers) and
tells how the trial ended. Optuna is imported only when a sweep is used.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from flowlib.errors import FlowError
from scheduler.sweeps import catalog
from scheduler.sweeps.book import StudyBook
from scheduler.sweeps.space import GRID_LIMIT


class SweepConflict(FlowError):
    """The request does not fit the sweep as it is (another space, a finished trial...): a 409."""


class NoSuchSweep(FlowError):
    """A 404."""


def owner_of(record: catalog.SweepRecord) -> str | None:
    """Who submitted the sweep (None: a sweep run by `flow sweep` where its database is)."""
    return record.settings.get("user")


def check_space(distributions: dict[str, str], space: dict[str, str], grid: Any) -> dict[str, Any]:
    """Optuna's distributions from their JSON, one per parameter of the space; a grid's values
    (any sampler may carry one) each inside its parameter's distribution."""
    from optuna.distributions import json_to_distribution

    if set(distributions) != set(space):
        raise SweepConflict(
            f"distributions name {sorted(distributions)}, the space {sorted(space)}: give one of each"
        )
    parsed = {}
    for name, text in distributions.items():
        try:
            parsed[name] = json_to_distribution(text)
        except Exception as exc:  # any malformed JSON a client sends is its error, not ours
            raise SweepConflict(f"distribution of '{name}': not Optuna's JSON of one ({exc})") from None
    if grid is None:
        return parsed
    if set(grid) != set(space) or not all(isinstance(v, list) and v for v in grid.values()):
        raise SweepConflict("grid: give a non-empty list of values for each parameter of the space")
    size = math.prod(len(values) for values in grid.values())
    if size > GRID_LIMIT:
        raise SweepConflict(f"grid: {size:,} points (at most {GRID_LIMIT:,})")
    for name, values in grid.items():
        for value in values:
            if not _inside(parsed[name], value):
                raise SweepConflict(
                    f"grid: {value!r} is not a value of parameter '{name}' ({distributions[name]})"
                )
    return parsed


def _inside(distribution: Any, value: Any) -> bool:
    if value is not None and not isinstance(value, (str, int, float)):
        return False
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except Exception:  # a value of the wrong type for the distribution
        return False


class SweepBooks:
    """The books of this server's submitted sweeps, opened once each (a sampler keeps its state
    between the trials it proposes)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._books: dict[str, StudyBook] = {}
        self._lock = threading.Lock()

    def storage(self) -> str:
        from scheduler.sweeps.study import storage_url

        return storage_url(self.engine.url.render_as_string(hide_password=False))

    def register(self, record: catalog.SweepRecord, user: str, admin: bool) -> None:
        """Record a new sweep, or continue the one of that name (same workflow, objective and
        space, its owner or an admin)."""
        with self._lock:
            old = catalog.find(self.engine, record.name)
            if old is None:
                record.settings["user"] = user
                try:
                    catalog.create(self.engine, record)
                except IntegrityError:  # another server (or a local `flow sweep`) made it just now
                    raise SweepConflict(f"sweep '{record.name}' was created meanwhile; try again") from None
                return
            if owner_of(old) is None:
                raise SweepConflict(
                    f"sweep '{old.name}' runs where `flow sweep` ran it; give --name to start another here"
                )
            if owner_of(old) != user and not admin:
                raise PermissionError(f"sweep '{old.name}' belongs to {owner_of(old)}")
            try:
                catalog.check_same(old, record)
            except FlowError as exc:
                raise SweepConflict(str(exc)) from None
            catalog.save_settings(self.engine, old.name, {**record.settings, "user": owner_of(old)})
            book = self._books.get(old.name)
            if book is not None:  # sampler and pruner may have changed; the storage stays open
                _configure(book, record.settings)

    def record(self, name: str) -> catalog.SweepRecord:
        found = catalog.find(self.engine, name)
        if found is None:
            raise NoSuchSweep(f"no sweep named '{name}' in this database")
        return found

    def book(self, record: catalog.SweepRecord) -> StudyBook:
        """The open book of a submitted sweep."""
        from scheduler.sweeps import study as studies

        settings = record.settings
        if "distributions" not in settings:
            raise SweepConflict(f"sweep '{record.name}' runs where `flow sweep` ran it, not on this server")
        with self._lock:
            book = self._books.get(record.name)
            if book is None:
                study = studies.open_study(record.name, self.storage(), direction=record.direction)
                book = self._books[record.name] = StudyBook(study, {})
                _configure(book, settings)
            return book


def _configure(book: StudyBook, settings: dict[str, Any]) -> None:
    """Give a book the sampler, pruner and distributions its sweep's settings ask for."""
    from scheduler.sweeps import study as studies

    book.study.pruner = studies.make_pruner(settings["pruner"])
    started = len(book.study.get_trials(deepcopy=False))
    book.study.sampler = studies.make_sampler(
        settings["sampler"], settings.get("seed"), settings.get("grid"), started=started
    )
    book.distributions = check_space(settings["distributions"], settings["space"], settings.get("grid"))


def settings_of(body: Any) -> dict[str, Any]:
    """The settings a submitted sweep records (those of a local one, and how to sample it)."""
    return {
        "space": dict(body.space),
        "params": dict(body.params),
        "trials": body.trials,
        "parallel": body.parallel,
        "sampler": body.sampler,
        "pruner": body.pruner,
        "seed": body.seed,
        "executor": body.executor,
        "distributions": dict(body.distributions),
        "grid": body.grid,
    }
