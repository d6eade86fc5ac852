"""A sweep's Optuna study: where it is stored, and its sampler and pruner.

The study lives in Optuna's own SQL storage beside the run database, never in its tables: Optuna
and flowlib both keep an `alembic_version` table. On SQLite that is a file next to the run
database (`flow.db` -> `flow-optuna.db`); on PostgreSQL the same database under the schema
`optuna`. Optuna is imported here only, by the commands that need it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scheduler.sweeps.space import SweepError

SCHEMA = "optuna"
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median")
DIRECTIONS = ("minimize", "maximize")
# Optuna's trial states as `flow sweep status` names them (a waiting trial is about to run)
STATES = {
    "COMPLETE": "complete",
    "FAIL": "failed",
    "PRUNED": "pruned",
    "RUNNING": "running",
    "WAITING": "running",
}


def study_file(database: Path) -> Path:
    """The SQLite file of the sweeps beside the run database file `database`."""
    return database.with_name(f"{database.stem}-optuna.db")


def storage_url(db_url: str) -> str:
    """The Optuna storage URL for the sweeps of the run database at `db_url`."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise SweepError("sweeps need a run database in a file (or PostgreSQL), not an in-memory one")
        return f"sqlite:///{study_file(Path(url.database))}"
    if url.get_backend_name() == "postgresql":
        options = url.query.get("options")
        options = " ".join(
            [*([options] if isinstance(options, str) else options or ()), f"-csearch_path={SCHEMA}"]
        )
        return url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    raise SweepError(f"sweeps keep their studies in SQLite or PostgreSQL, not {url.get_backend_name()}")


def shown_storage(storage: str) -> str:
    """The storage URL as the sweep records it: without a password."""
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)


def _storage(url: str) -> Any:
    import optuna

    if url.startswith("postgresql"):
        _create_schema(url)
    kwargs = {"creator": _sqlite_connector(url)} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _sqlite_connector(url: str) -> Any:
    """Connections to the study's SQLite file in WAL mode without an fsync per commit: Optuna
    commits several times per trial and per reported step, and each fsync costs milliseconds. A
    killed sweep loses nothing (the log is in the OS's hands); a power cut may lose the last
    commits, which leaves their trials `running`, and `flow sweep resume` settles those from
    their runs. A reader (`flow sweep status`) may hold the lock for a moment: wait for it."""
    import sqlite3

    from sqlalchemy.engine import make_url

    path = make_url(url).database

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return connect


def _create_schema(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    plain = make_url(url)
    options = " ".join(o for o in str(plain.query.get("options", "")).split() if "search_path" not in o)
    plain = (
        plain.update_query_dict({"options": options})
        if options
        else plain.difference_update_query(["options"])
    )
    engine = create_engine(plain)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    finally:
        engine.dispose()


def open_study(
    name: str,
    storage: str,
    *,
    direction: str | None = None,
    sampler: Any = None,
    pruner: Any = None,
) -> Any:
    """The study `name`, created when `direction` is given and it does not exist yet."""
    import optuna

    store = _storage(storage)
    if direction is None:
        try:
            return optuna.load_study(study_name=name, storage=store, sampler=sampler, pruner=pruner)
        except KeyError:
            raise SweepError(f"sweep '{name}' has no study in {shown_storage(storage)}") from None
    return optuna.create_study(
        study_name=name,
        storage=store,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def make_sampler(
    kind: str, seed: int | None, grid: Mapping[str, list[Any]] | None = None, *, started: int = 0
) -> Any:
    """Optuna's sampler `kind` (`grid`: the grid's values by parameter, see space.grid_space). A
    continued sweep's random samplers are seeded past the trials it has, so they do not propose
    the same points again; a grid keeps its seed (it fixes the grid's order)."""
    import optuna

    if kind == "grid":
        if not grid:
            raise SweepError("--sampler grid needs the grid's values")
        return optuna.samplers.GridSampler(dict(grid), seed=seed)
    if seed is not None:
        seed += started
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise SweepError(f"--sampler {kind}: expected one of {', '.join(SAMPLERS)}")


def make_pruner(kind: str) -> Any:
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner()
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise SweepError(f"--pruner {kind}: expected one of {', '.join(PRUNERS)}")


def trial_state(trial: Any) -> str:
    return STATES.get(trial.state.name, trial.state.name.lower())


def tell(study: Any, number: int, *, value: float | None = None, state: str = "complete") -> None:
    """Finish trial `number` as complete (with `value`), failed or pruned."""
    from optuna.trial import TrialState

    states = {"complete": TrialState.COMPLETE, "failed": TrialState.FAIL, "pruned": TrialState.PRUNED}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            study.tell(number, value if state == "complete" else None, state=states[state])
        except RuntimeError:
            # the grid sampler stops "the optimize loop" once its grid is done, and there is none
            # here; the trial's state is stored before that, so nothing is lost
            pass


def live_trial(study: Any, frozen: Any) -> Any:
    """A trial left running (by a killed sweep) as a live Optuna trial, to report steps to again."""
    import optuna

    return optuna.trial.Trial(study, frozen._trial_id)
