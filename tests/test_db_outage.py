"""A database that stops answering mid-run: the scheduler waits for it, or stops the run cleanly.

These restart a PostgreSQL server of their own (tests/pg.py), so they run where PostgreSQL is
installed (CI installs it) and are skipped elsewhere.
"""

from __future__ import annotations

import re
import time

import pytest
from e2e import MARK, TRACEBACK, make_project
from pg import create_database, own_server
from sqlalchemy import create_engine, select, update

CHAIN = (
    MARK
    + """
import time
from flowlib import operator, workflow

@operator
def step(i: int, before: int) -> int:
    time.sleep(0.4)
    mark(f"step{i}")
    return before + i

@workflow
def chain(n: int = 12) -> int:
    total = 0
    for i in range(n):
        total = step(i, total)
    return total
"""
)


@pytest.fixture(scope="module")
def postgres():  # type: ignore[no-untyped-def]
    server = own_server()
    if server is None:
        pytest.skip("no PostgreSQL installed (initdb and pg_ctl)")
    yield server
    server.remove()


def _start_and_wait_for_first_step(project, url: str):  # type: ignore[no-untyped-def]
    process = project.popen("run", "p.py", "--json", env={"FLOW_DB_URL": url})
    deadline = time.monotonic() + 60
    while not project.marks("step1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert project.marks("step1"), "the run never started"
    return process


def _executions(project) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {f"step{i}": len(project.marks(f"step{i}")) for i in range(12)}


def test_a_short_outage_pauses_the_run_and_it_goes_on(tmp_path, postgres) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "proj")
    project.write("p.py", CHAIN)
    url = create_database(postgres.url)
    process = _start_and_wait_for_first_step(project, url)
    postgres.stop()
    time.sleep(3)
    postgres.start()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "the database does not answer" in err and "answers again" in err, err
    assert not re.search(TRACEBACK, err, re.M), err
    assert '"status": "succeeded"' in out
    assert set(_executions(project).values()) == {1}, _executions(project)  # nothing ran twice


def test_a_long_outage_stops_the_run_as_interrupted_and_resume_continues_it(tmp_path, postgres) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "proj")
    project.write("flow.toml", "[flow]\ndb_outage_seconds = 2\n")
    project.write("p.py", CHAIN)
    url = create_database(postgres.url)
    process = _start_and_wait_for_first_step(project, url)
    postgres.stop()
    try:
        _out, err = process.communicate(timeout=120)
    finally:
        postgres.start()
    assert process.returncode == 130, err
    assert not re.search(TRACEBACK, err, re.M), err
    stopped = re.search(r"error: run (\w+) stopped: .*`flow resume \1` continues it", err)
    assert stopped, err
    run_id = stopped.group(1)
    env = {"FLOW_DB_URL": url}
    assert project.flow("status", run_id, "--json", env=env).json()["status"] == "interrupted"
    before = _executions(project)
    resumed = project.flow("resume", run_id, "--json", env=env)
    assert resumed.code == 0, resumed
    assert resumed.json()["outputs"] == sum(range(12))
    after = _executions(project)
    recorded = {
        n["name"]: n["status"] for n in project.flow("status", run_id, "--json", env=env).json()["nodes"]
    }
    for i in range(12):
        name, node = f"step{i}", "step" if i == 0 else f"step-{i + 1}"
        if recorded[node] == "succeeded":  # recorded before the outage: never again
            assert after[name] == before[name] == 1, (name, before, after)
        else:
            assert after[name] == before[name] + 1, (name, before, after)


def test_a_pool_run_adopted_elsewhere_is_never_recorded_by_its_old_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from scheduler.engine.writes import Writes
    from scheduler.store.batch import RunRows, RunTakenOver, Session
    from scheduler.store.models import events, runs

    project = make_project(tmp_path / "proj")
    project.write("p.py", CHAIN)
    run_id = project.flow("run", "p.py", "-p", "n=1", "--json").json()["run_id"]
    engine = create_engine(f"sqlite:///{project.root / '.flow' / 'flow.db'}")
    with engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(server="A"))  # run by server A
    session = Session(engine)
    writes = Writes(run_id)
    writes.event(None, "by_a", None, 1.0)
    RunRows(run_id, {}, owner="A").commit(session, writes)  # still A's: recorded
    with engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(server="B"))  # B adopted it
    writes.event(None, "by_a_after", None, 2.0)
    with pytest.raises(RunTakenOver):
        RunRows(run_id, {}, owner="A").commit(session, writes)
    session.stop()
    with engine.connect() as conn:
        kinds = set(conn.scalars(select(events.c.kind).where(events.c.run_id == run_id)))
    assert "by_a" in kinds and "by_a_after" not in kinds
