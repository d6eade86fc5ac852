"""Compile, then run: a plan compiled in one process runs in another that never imports the
pipeline; several runs share one driver, one set of workers and one account of their CPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sqlalchemy import select

from scheduler.store import db
from scheduler.store.models import attempts, runs

PIPELINE = """
import os, pathlib, time
from typing import NamedTuple
from flowlib import File, Resources, operator, workflow

with open(pathlib.Path(__file__).with_name("imports.txt"), "a") as marks:  # who imports this module
    marks.write(f"{os.getpid()}\\n")


class Pair(NamedTuple):
    low: int
    high: int


@operator
def leaf(i: int) -> int:
    return i * i


@operator
def total(xs: list[int], extra: dict[str, int]) -> int:
    return sum(xs) + sum(extra.values())


@operator
def pair(x: int) -> Pair:
    return Pair(x, x + 1)


@operator
def size(data: File) -> int:
    return len(open(data).read())


@operator(resources=Resources(cpus=1))
def nap(i: int) -> int:
    time.sleep(0.4)
    return i


@operator(resources=Resources(cpus=2))
def wide(i: int) -> int:
    time.sleep(0.4)
    return i


@workflow
def fancy(n: int = 3) -> int:
    leaves = [leaf(i) for i in range(n)]
    p = pair.map([1, 2])
    return total(leaves + [size(File("data.txt"))], {"low": total(p.low, {}), "high": total(p.high, {})})


@workflow
def naps(n: int = 4, width: int = 1) -> tuple[list[int], list[int]]:
    return nap.map(list(range(n))), [wide(k) for k in range(width)]
"""


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "flow.toml").write_text("[executors.local]\nworkers = 2\n")
    (root / "pipeline.py").write_text(PIPELINE)
    (root / "data.txt").write_text("12345")
    return root


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env["FLOW_HOME"] = str(root / ".flow")
    return env


def _python(root: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_plan_compiled_here_runs_in_a_process_that_never_imports_the_pipeline(tmp_path: Path) -> None:
    root = _project(tmp_path)
    compiled = _python(
        root,
        """
        import os, sys
        from flowlib.compile import compile_dag
        from flowlib.loading import select_workflow
        plan = compile_dag(select_workflow("pipeline.py", "fancy").build(n=3))
        open("plan.json", "w").write(plan.dumps())
        print(os.getpid())
        """,
    )
    assert compiled.returncode == 0, compiled.stderr
    compiler = int(compiled.stdout.strip())
    plan = json.loads((root / "plan.json").read_text())
    assert {"list", "dict"} <= {next(iter(v)) for n in plan["nodes"] for v in n["inputs"].values()}

    done = subprocess.run(
        [sys.executable, "-m", "scheduler.drivers", "plan.json"],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"

    engine = db.connect(f"sqlite:///{root / '.flow' / 'flow.db'}")
    with engine.connect() as conn:
        workers = set(conn.scalars(select(attempts.c.pid).where(attempts.c.run_id == result["run_id"])))
        driver = conn.scalar(select(runs.c.pid).where(runs.c.id == result["run_id"]))
    importers = {int(line) for line in (root / "imports.txt").read_text().split()}
    assert compiler in importers and driver not in importers, (importers, driver)
    assert importers - {compiler} <= workers, (importers, workers)

    from flowlib.api import get_run

    os.environ["FLOW_HOME"] = str(root / ".flow")
    try:
        outputs = get_run(result["run_id"], db=f"sqlite:///{root / '.flow' / 'flow.db'}")
    finally:
        del os.environ["FLOW_HOME"]
    assert outputs.outputs == 0 + 1 + 4 + 5 + (1 + 2) + (2 + 3)


def test_two_runs_in_one_driver_share_the_workers_and_never_exceed_the_cpus(tmp_path: Path) -> None:
    root = _project(tmp_path)
    done = _python(
        root,
        """
        from flowlib.compile import compile_dag
        from flowlib.config import load
        from flowlib.loading import select_workflow
        from scheduler.runs import Launch, RunOptions, execute_many
        wf = select_workflow("pipeline.py", "naps")
        plans = [compile_dag(wf.build(n=4, width=1)), compile_dag(wf.build(n=3, width=2))]
        run_ids, _ = execute_many([Launch(p) for p in plans], load(), RunOptions(use_cache=False))
        print(" ".join(run_ids))
        """,
    )
    assert done.returncode == 0, done.stderr
    run_ids = done.stdout.split()
    engine = db.connect(f"sqlite:///{root / '.flow' / 'flow.db'}")
    with engine.connect() as conn:
        found = conn.execute(select(runs.c.id, runs.c.status).where(runs.c.id.in_(run_ids))).all()
        rows = conn.execute(
            select(attempts.c.run_id, attempts.c.node, attempts.c.started_at, attempts.c.ended_at).where(
                attempts.c.run_id.in_(run_ids)
            )
        ).all()
    assert sorted(status for _, status in found) == ["succeeded", "succeeded"]
    assert {r.run_id for r in rows} == set(run_ids) and len(rows) == 4 + 1 + 3 + 2
    events = []
    for row in rows:
        cpus = 2 if row.node.startswith("wide") else 1
        events += [(row.started_at, cpus), (row.ended_at, -cpus)]
    used = peak = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at one instant
        used += change
        peak = max(peak, used)
    assert peak <= 2, f"{peak} CPUs in use at once on a 2-CPU pool"
