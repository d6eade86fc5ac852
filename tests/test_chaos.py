"""A short chaos run: seeded trials of every fault kind of benchmarks/chaos.py, each check asserted.

Each trial runs a small random DAG, breaks it once (SIGKILL of `flow run`, of a worker, of a
pool server; a PostgreSQL restart; a full artifact store; a corrupted artifact), recovers, and
checks: the outputs equal a fault-free run's, nothing committed as succeeded ran again, every
artifact a succeeded node references is whole, the database passes its integrity checks.
Kinds whose prerequisites are missing (PostgreSQL, root for the tmpfs) are skipped.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.chaos import describe  # noqa: E402
from benchmarks.chaoslib.dag import Dag, make_dag  # noqa: E402
from benchmarks.chaoslib.faults import KINDS, Reference, reference_run, run_trial, why_not  # noqa: E402
from benchmarks.chaoslib.services import Postgres, why_not_postgres  # noqa: E402

SEEDS = {7: 10, 8: 12}  # DAG seed -> nodes


@pytest.fixture(scope="module")
def postgres():  # type: ignore[no-untyped-def]
    if why_not_postgres() is not None:
        yield None
        return
    server = Postgres()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def dags(tmp_path_factory):  # type: ignore[no-untyped-def]
    made: dict[int, tuple[Dag, Reference]] = {}

    def get(seed: int) -> tuple[Dag, Reference]:
        if seed not in made:
            dag = make_dag(seed, SEEDS[seed])
            made[seed] = dag, reference_run(dag, tmp_path_factory.mktemp(f"reference-{seed}"))
        return made[seed]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("seed", sorted(SEEDS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_loses_nothing_reruns_nothing_that_succeeded_and_trusts_nothing_corrupt(
    kind, seed, dags, postgres, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    reason = why_not(kind)
    if reason:
        pytest.skip(reason)
    dag, reference = dags(seed)
    outcome = run_trial(kind, seed, dag, reference, tmp_path, postgres)
    assert outcome.ok, describe(outcome, verbose=True)
    assert outcome.recovery_s is not None


def test_the_checks_see_what_they_look_for(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each check fails where it should: a wrong output, a re-execution, a damaged or missing
    artifact, a row pointing at nothing, a process left behind."""
    import subprocess

    from sqlalchemy import text, update

    from benchmarks.chaoslib.checks import Artifacts, integrity, lost_outputs, reexecuted
    from benchmarks.chaoslib.project import Project
    from benchmarks.chaoslib.services import outliving, started_with
    from scheduler.store.models import artifacts

    dag = make_dag(3, 10)
    project = Project(tmp_path / "proj", extra_env={"CHAOS_FAST": "1"}).setup(dag.source())
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done.err
    run_id, outputs = done.json()["run_id"], done.json()["outputs"]
    assert lost_outputs(project, run_id, outputs) == [] and Artifacts(project).bad() == []
    assert integrity(project) == []
    some = sorted(outputs)[0]
    assert lost_outputs(project, run_id, {**outputs, some: "other"}) == [some]
    assert lost_outputs(project, None, outputs) == sorted(outputs)

    counted = project.executions()
    assert set(counted) == set(dag.nodes) and set(counted.values()) == {1}
    again = counted + Counter({dag.nodes[0]: 1})
    assert reexecuted(counted, again, dag.nodes) == [dag.nodes[0]]
    assert reexecuted(counted, again, dag.nodes, allowed=[dag.nodes[0]]) == []

    files = sorted(p for p in (project.store / "objects").rglob("*") if p.is_file())
    referenced = Artifacts(project).referenced()
    stored = next(p for p in files if p.name in referenced)
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes()[:-1])
    inline = next(d for d in Artifacts(project).inline if d in referenced)
    with project.engine.begin() as conn:
        conn.execute(update(artifacts).where(artifacts.c.digest == inline).values(data=b"{}"))
    bad = Artifacts(project).bad()
    assert len(bad) == 2 and {stored.name, inline} == {line.split()[0] for line in bad}, bad
    stored.unlink()
    assert any("missing" in line for line in Artifacts(project).bad())

    with project.engine.begin() as conn:  # SQLite does not enforce foreign keys unless asked
        conn.execute(text("UPDATE nodes SET run_id = 'nowhere' WHERE name = :n"), {"n": dag.nodes[0]})
    assert any("foreign key" in line for line in integrity(project)), integrity(project)
    project.close()

    sleeper = subprocess.Popen(["sleep", "30"], env=project.env)
    try:
        # Popen returns once exec has closed the error pipe, which the kernel does before it sets
        # up the new image's environment: for a moment /proc/PID/environ reads empty.
        deadline = time.monotonic() + 10
        while (
            not (found := started_with("CHAOS_MARKS", str(project.marks_file)))
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        assert [p.pid for p in found] == [sleeper.pid]
        assert outliving(started_with("CHAOS_MARKS", str(project.marks_file)), 0.1)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert started_with("CHAOS_MARKS", str(project.marks_file)) == []


def test_the_database_check_finds_rows_pointing_at_nothing_on_postgresql(tmp_path, postgres) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from benchmarks.chaoslib.checks import integrity
    from benchmarks.chaoslib.project import Project

    if postgres is None:
        pytest.skip(why_not_postgres() or "no PostgreSQL")
    project = Project(tmp_path / "proj", extra_env={"CHAOS_FAST": "1"}).setup(make_dag(3, 10).source())
    project.db_url = postgres.create_database()
    try:
        assert project.flow("run", "p.py").code == 0
        assert integrity(project) == []
        with project.engine.begin() as conn:  # as a broken write would leave it, past the constraint
            conn.execute(text("ALTER TABLE edges DISABLE TRIGGER ALL"))
            conn.execute(text("UPDATE edges SET run_id = 'nowhere'"))
        assert any("foreign key" in line and "edges" in line for line in integrity(project))
    finally:
        project.close()
        postgres.drop_database(project.db_url)
