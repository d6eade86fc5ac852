"""A short chaos run: seeded trials of every fault kind of benchmarks/chaos.py, each check asserted.

Each trial runs a small random DAG, breaks it once (SIGKILL of `flow run`, of a worker, of a
pool server; a PostgreSQL restart; a full artifact store; a corrupted artifact), recovers, and
checks: the outputs equal a fault-free run's, nothing committed as succeeded ran again, every
artifact a succeeded node references is whole, the database passes its integrity checks.
Kinds whose prerequisites are missing (PostgreSQL, root for the tmpfs) are skipped.
"""

from __future__ import annotations

import sys
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
