"""What every chaos trial shares: its records (Trial, Broken, Outcome), the fault-free reference run,
and the steps the faults are made of (a random moment, what was committed at it, recovery)."""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.chaoslib.dag import Dag
from benchmarks.chaoslib.project import Project
from benchmarks.chaoslib.services import Postgres, kill_all, outliving

TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


@dataclass
class Reference:
    """A fault-free run of a DAG: its outputs, and the bytes its artifact files took."""

    outputs: dict[str, Any]
    store_bytes: int


@dataclass
class Trial:
    kind: str
    seed: int
    dag: Dag
    reference: Reference
    project: Project
    postgres: Postgres | None
    rng: random.Random
    problems: list[str] = field(default_factory=list)  # deviations from what the docs promise
    notes: list[str] = field(default_factory=list)  # what happened, for the log
    cleanup: list[Callable[[], None]] = field(default_factory=list)  # after the checks


@dataclass
class Broken:
    final: str | None  # the run that holds the outputs after recovery
    succeeded: set[str]  # committed as succeeded at the fault
    marks: Counter[str]  # executions counted at the fault
    recovery_s: float | None
    allowed: set[str] = field(default_factory=set)  # nodes that may (must) execute again


@dataclass
class Outcome:
    kind: str
    seed: int
    nodes: int
    lost: list[str]
    reexecuted: list[str]
    corrupt: list[str]
    integrity: list[str]
    problems: list[str]
    notes: list[str]
    recovery_s: float | None

    @property
    def ok(self) -> bool:
        return not (self.lost or self.reexecuted or self.corrupt or self.integrity or self.problems)


def reference_run(dag: Dag, folder: Path) -> Reference:
    """Outputs of a fault-free run with the inline executor in a clean home (no sleeps)."""
    project = Project(folder / "proj", extra_env={"CHAOS_FAST": "1"}).setup(dag.source())
    done = project.flow("run", "p.py", "--executor", "inline", "--json")
    if done.code != 0:
        raise RuntimeError(f"the reference run failed: exit {done.code}\n{done.err[-3000:]}")
    size = sum(p.stat().st_size for p in (project.store / "objects").rglob("*") if p.is_file())
    return Reference(done.json()["outputs"], size)


# -- helpers ---------------------------------------------------------------------------------
def at_fault(project: Project, run_id: str | None) -> tuple[set[str], Counter[str]]:
    """What is committed as succeeded now, then the executions so far (in that order: a node
    commits after its mark, so every succeeded node's own execution is among the marks read)."""
    statuses = project.statuses(run_id) if run_id is not None else {}
    return {name for name, status in statuses.items() if status == "succeeded"}, project.executions()


def current_run(project: Project) -> str | None:
    """The newest run recorded, or None (nothing recorded yet, or not even the database)."""
    try:
        ids = project.run_ids()
    except Exception:  # no database file or tables yet
        return None
    return ids[-1] if ids else None


def random_moment(t: Trial, process: Any = None, early: float = 0.0) -> bool:
    """Wait until a random share of the nodes has started, plus up to 0.3 s; or, with chance
    `early`, up to 2 s from the start, maybe before the run is even recorded (False: it ended)."""
    if t.rng.random() < early:
        time.sleep(t.rng.uniform(0, 2.0))
        t.notes.append("an early fault")
        return process is None or process.poll() is None
    count = t.rng.randint(1, max(1, int(len(t.dag.nodes) * 0.8)))
    if not t.project.wait_for_marks(count, process):
        return False
    time.sleep(t.rng.uniform(0, 0.3))
    return process is None or process.poll() is None


def recover(t: Trial, run_id: str, tries: int = 2) -> str | None:
    """`flow resume` until it succeeds (at most `tries` times); the run that holds the outputs."""
    current = run_id
    for _ in range(tries):
        done = t.project.flow("resume", current, "--json")
        try:
            shown = done.json()
        except ValueError:
            shown = None
        if TRACEBACK.search(done.err):
            t.problems.append(f"flow resume {current} printed a traceback")
            t.notes.append(done.err[-3000:])
        if done.code == 0 and shown:
            return shown["run_id"]
        last = (done.err.strip().splitlines() or ["(no output)"])[-1]
        t.problems.append(f"flow resume {current}: exit {done.code}: {last}")
        if shown and shown.get("run_id"):
            current = shown["run_id"]
    return None


def finished(t: Trial, process: Any, what: str) -> str | None:
    """Wait for a `flow run`; its run id when it succeeded, else None (with a note)."""
    out, err = process.communicate(timeout=600)
    if process.returncode == 0:
        return json.loads(out)["run_id"]
    last = (err.strip().splitlines() or ["(no output)"])[-1]
    t.notes.append(f"{what}: exit {process.returncode}: {last}")
    return None


def orphans(t: Trial, started: list[psutil.Process]) -> None:
    """Check the processes a killed scheduler had started end by themselves (workers die with it)."""
    left = outliving(started, 15)
    if left:
        t.problems.append(f"{len(left)} processes of a killed scheduler were still alive 15 s later")
        kill_all(left)
