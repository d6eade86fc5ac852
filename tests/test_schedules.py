"""Schedules, by the clock: a due time runs once, however many servers look; a window missed while
no server was up runs once when one comes back, not once per missed tick."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from flowlib.errors import FlowError
from flowlib.store import ArtifactRef, ArtifactStore
from scheduler.server import deployments
from scheduler.server.snapshots import digest_of, pack
from scheduler.store import db
from scheduler.store.models import runs

PIPELINE = """
from flowlib import operator, workflow

@operator
def one(x: int) -> int:
    return x

@workflow
def w(x: int = 1) -> int:
    return one(x)
"""


@pytest.fixture
def launcher(tmp_path: Path):  # type: ignore[no-untyped-def]
    project = tmp_path / "proj"
    project.mkdir()
    (project / "flow.toml").write_text("")
    (project / "p.py").write_text(PIPELINE)
    engine = db.connect(f"sqlite:///{tmp_path / 'flow.db'}")
    store = ArtifactStore(str(tmp_path / "artifacts"))
    data = pack(project, 50)
    snapshot = digest_of(data)
    store.write(ArtifactRef(snapshot, "snapshot", 1, len(data)), data)
    deployments.deploy(
        engine,
        name="hourly",
        workflow="w",
        file="p.py",
        snapshot=snapshot,
        parameters=[],
        params={"x": 5},
        schedule="0 * * * *",
        user="ops",
    )
    yield deployments.Launcher(engine, store, tmp_path / "snapshots", "local"), engine


def _runs(engine) -> list:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(runs.c.deployment, runs.c.status, runs.c.params)).all()


def test_a_due_time_runs_once_and_a_missed_stretch_runs_once(launcher) -> None:  # type: ignore[no-untyped-def]
    fire, engine = launcher
    created = _created(engine)
    first = _hour_after(created)
    assert fire.fire_due("ops", now=first + 30) != []  # the first hour after the deploy
    assert fire.fire_due("ops", now=first + 40) == []  # the same due time again: nothing
    assert fire.fire_due("ops", now=first + 40) == []  # (another server asking: the row is taken)
    assert len(_runs(engine)) == 1
    # five hours without a server: one run when one comes back, for the latest due time
    assert len(fire.fire_due("ops", now=first + 5 * 3600 + 10)) == 1
    assert len(_runs(engine)) == 2
    rows = _runs(engine)
    assert {r.deployment for r in rows} == {"hourly"} and all(r.status == "queued" for r in rows)
    assert all(r.params == {"x": 5} for r in rows)


def test_a_tick_before_the_deploy_does_not_run(launcher) -> None:  # type: ignore[no-untyped-def]
    fire, engine = launcher
    created = _created(engine)
    now = min(created + 1, _hour_after(created) - 0.001)  # not past the next hour's tick
    assert fire.fire_due("ops", now=now) == []  # the hour's tick came before it
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(runs)) == 0


def _created(engine) -> float:  # type: ignore[no-untyped-def]
    from scheduler.store.models import deployments as table

    with engine.connect() as conn:
        return conn.scalar(select(table.c.created_at))


def _hour_after(moment: float) -> float:
    return (int(moment) // 3600 + 1) * 3600


def test_a_cron_expression_is_checked() -> None:
    deployments.check_schedule("*/5 * * * *")
    for bad in ("every hour", "* * * *", "61 * * * *"):
        with pytest.raises(FlowError, match="cron"):
            deployments.check_schedule(bad)
