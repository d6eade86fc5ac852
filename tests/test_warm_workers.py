"""Warm workers: the local pool forks its workers from a template that imported the pipeline's
libraries (executors.template), and falls back to fresh interpreters when it cannot; the pool's
placement interface (executors.placement), as the `gpu` executor uses it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from e2e import Project, alive, make_project

from executors.base import OperatorRef, TaskSpec
from executors.placement import Seat, Unplaceable
from executors.pool import WorkerPool

# A library outside the project that is slow to import and says who imported it.
HEAVY = """
import os, sys, threading, time
with open(os.environ["HEAVY_MARKS"], "a") as f:
    f.write(f"{os.getpid()}\\n")
IN_TEMPLATE = sys.argv[0].endswith("template.py")
if IN_TEMPLATE and os.environ.get("HEAVY_FAILS_IN_TEMPLATE"):
    raise RuntimeError("heavylib-refuses-the-template")
if IN_TEMPLATE and os.environ.get("HEAVY_THREAD_IN_TEMPLATE"):
    threading.Thread(target=time.sleep, args=(60,), name="heavy-poller", daemon=True).start()
time.sleep(0.5)
"""

PIPELINE = """
import gc, os, time
import heavylib
import numpy as np
from flowlib import operator, workflow

@operator(cache=False)
def who(i: int) -> dict:
    time.sleep(0.3)  # both run at once: two workers
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "random": float(np.random.random()),
        "frozen": gc.get_freeze_count(),  # what the imports made, out of the collector's passes
    }

@workflow
def both() -> list[dict]:
    return [who(1), who(2)]
"""


@pytest.fixture
def heavy(tmp_path: Path) -> dict[str, str]:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "heavylib.py").write_text(HEAVY)
    marks = tmp_path / "heavy.marks"
    marks.touch()
    return {"PYTHONPATH": str(lib), "HEAVY_MARKS": str(marks)}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    made = make_project(tmp_path / "proj")
    made.write("p.py", PIPELINE)
    return made


def importers(env: dict[str, str]) -> list[int]:
    return [int(line) for line in Path(env["HEAVY_MARKS"]).read_text().split()]


def config(project: Project, start: str | None = None) -> None:
    line = f'start = "{start}"\n' if start else ""
    (project.root / "flow.toml").write_text(f"[executors.local]\nworkers = 2\n{line}")


def test_workers_are_forked_from_a_template_that_imported_the_pipelines_libraries(project, heavy):
    config(project)
    done = project.flow("run", "p.py", "--json", env=heavy)
    assert done.code == 0, done
    workers = done.json()["outputs"]
    pids, parents = {w["pid"] for w in workers}, {w["ppid"] for w in workers}
    assert len(pids) == 2 and len(parents) == 1, workers  # two workers, one template
    imported = importers(heavy)
    assert len(imported) == 2 and parents <= set(imported), imported  # the scheduler and the template
    assert not pids & set(imported), "a worker imported the library again"
    assert workers[0]["random"] != workers[1]["random"], "forked workers share the template's random state"
    assert all(w["frozen"] > 10_000 for w in workers), workers  # the template froze its imports
    assert "fresh interpreters" not in done.err


def test_the_template_imports_the_libraries_while_the_scheduler_does(project, heavy, tmp_path):
    """`flow run` starts the template before it imports the pipeline: the two imports overlap."""
    config(project)
    times = tmp_path / "import.times"
    (Path(heavy["PYTHONPATH"]) / "heavylib.py").write_text(
        "import os, time\n"
        f"with open({str(times)!r}, 'a') as f:\n"
        "    f.write(f'{os.getpid()} start {time.time()}\\n')\n"
        # wait for the other importer to start (a rendezvous, not a fixed window): done at once
        # when the imports overlap; when they run one after the other this one gives up first
        "deadline = time.monotonic() + 30\n"
        f"while open({str(times)!r}).read().count(' start ') < 2 and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        f"with open({str(times)!r}, 'a') as f:\n"
        "    f.write(f'{os.getpid()} end {time.time()}\\n')\n"
    )
    done = project.flow("run", "p.py", "--json", env=heavy)
    assert done.code == 0, done
    rows = [line.split() for line in times.read_text().splitlines()]
    spans: dict[str, dict[str, float]] = {}
    for pid, what, when in rows:
        spans.setdefault(pid, {})[what] = float(when)
    assert len(spans) == 2, rows  # the scheduler and the template, no worker
    first, second = sorted(spans.values(), key=lambda span: span["start"])
    assert second["start"] < first["end"], rows  # the second import began before the first ended


def test_start_spawn_gives_fresh_interpreters(project, heavy):
    config(project, "spawn")
    done = project.flow("run", "p.py", "--json", env=heavy)
    assert done.code == 0, done
    pids = {w["pid"] for w in done.json()["outputs"]}
    assert pids <= set(importers(heavy)), "each fresh worker imports the library itself"
    assert all(w["frozen"] > 10_000 for w in done.json()["outputs"]), done.json()["outputs"]


def test_an_unknown_start_is_a_configuration_error(project, heavy):
    config(project, "vfork")
    done = project.flow("run", "p.py", env=heavy)
    assert done.code == 2 and '[executors.local] start: expected "fork" or "spawn"' in done.err, done


@pytest.mark.parametrize(
    "trouble, says",
    [
        ("HEAVY_FAILS_IN_TEMPLATE", "importing heavylib failed in the worker template"),
        ("HEAVY_THREAD_IN_TEMPLATE", "started threads (heavy-poller)"),
    ],
)
def test_a_template_that_cannot_fork_safely_falls_back_to_fresh_workers_and_says_so_once(
    project, heavy, trouble, says
):
    config(project)
    done = project.flow("run", "p.py", "--json", env={**heavy, trouble: "1"})
    assert done.code == 0, done
    assert done.err.count(says) == 1 and done.err.count("workers start as fresh interpreters") == 1, done
    pids = {w["pid"] for w in done.json()["outputs"]}
    assert pids <= set(importers(heavy)), "the fallback workers are fresh interpreters"


SLOW = """
import os, time
from flowlib import operator, workflow

@operator(cache=False, retries=1, retry_delay=0)
def slow(marks: str) -> int:
    with open(marks, "a") as f:
        f.write(f"{os.getpid()} {os.getppid()}\\n")
    with open(marks) as f:
        attempts = len(f.readlines())
    time.sleep(60 if attempts < 2 else 0)  # only the first attempt hangs
    return os.getpid()

@workflow
def hanging(marks: str) -> int:
    return slow(marks)
"""


def _gone(pids: set[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _first_attempt(marks: Path) -> tuple[int, int]:
    deadline = time.monotonic() + 60
    while not marks.exists() or not marks.read_text().strip():
        assert time.monotonic() < deadline, "the node never started"
        time.sleep(0.05)
    pid, parent = marks.read_text().split()[:2]
    return int(pid), int(parent)


def test_the_template_and_its_workers_die_with_the_scheduler(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", SLOW)
    marks = tmp_path / "marks"
    process = project.popen("run", "p.py", "-p", f"marks={marks}")
    worker, template = _first_attempt(marks)
    assert "executors.template" in " ".join(psutil.Process(template).cmdline())
    assert psutil.Process(template).ppid() == process.pid
    process.kill()
    process.wait(timeout=10)
    assert _gone({worker, template}), "the template or its worker outlived the scheduler"


def test_a_dead_template_fails_only_the_attempt_it_took_down(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", SLOW)
    marks = tmp_path / "marks"
    process = project.popen("run", "p.py", "-p", f"marks={marks}", "--json")
    worker, template = _first_attempt(marks)
    os.kill(template, signal.SIGKILL)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    node = json.loads(out)["nodes"][0]
    assert node["attempts"] == 2, node  # the first died with its template, the retry ran
    assert _gone({worker})
    assert err.count("workers start as fresh interpreters") == 1, err


# -- the pool's placement interface, without a GPU ---------------------------------------------------
OWN = """
import json, os
from flowlib import operator

@operator
def where(out: str) -> int:
    with open(out, "w") as f:
        json.dump([os.environ.get("SEAT"), os.getpid()], f)
    return 1
"""


class Seats:
    """Claims tasks whose node starts with "own"; one seat at a time; node "own-never" never gets one."""

    retry_s = 0.05

    def __init__(self) -> None:
        self.taken, self.freed = 0, 0
        self.free_now = threading.Event()

    def claims(self, spec: TaskSpec) -> bool:
        return spec.node.startswith("own")

    def seat(self, spec: TaskSpec) -> Seat | None:
        if spec.node == "own-never":
            raise Unplaceable("NoSeat", "there is no seat for it")
        if self.taken > self.freed:
            return None
        self.taken += 1
        return Seat({"SEAT": f"seat-{self.taken}"}, (), self._free)

    def _free(self) -> None:
        self.freed += 1
        self.free_now.set()


def _spec(tmp_path: Path, node: str) -> TaskSpec:
    code = tmp_path / "own_ops.py"
    code.write_text(OWN)
    return TaskSpec(
        task_id=node,
        run_id="r",
        node=node,
        attempt=1,
        operator=OperatorRef(str(code), "own_ops", "where"),
        inputs={"out": {"literal": str(tmp_path / f"{node}.json")}},
        store_url=str(tmp_path / "store"),
        fsync=False,
    )


def _ran(tmp_path: Path, node: str, future) -> list:  # type: ignore[no-untyped-def]
    result = future.result(timeout=60)
    assert result.ok, result.error
    return json.loads((tmp_path / f"{node}.json").read_text())


def test_a_placement_seats_tasks_on_workers_of_their_own(tmp_path):
    seats = Seats()
    pool = WorkerPool(1, placement=seats)
    pool.open()
    try:
        warm = _ran(tmp_path, "warm", pool.submit(_spec(tmp_path, "warm"), lambda _: None))
        first = pool.submit(_spec(tmp_path, "own-1"), lambda _: None)
        second = pool.submit(_spec(tmp_path, "own-2"), lambda _: None)  # waits for the first's seat
        one, two = _ran(tmp_path, "own-1", first), _ran(tmp_path, "own-2", second)
        assert warm[0] is None and {one[0], two[0]} == {"seat-1", "seat-2"}
        assert len({warm[1], one[1], two[1]}) == 3, "a seated task runs on a fresh worker of its own"
        assert seats.free_now.wait(10) and seats.freed <= 2
        never = pool.submit(_spec(tmp_path, "own-never"), lambda _: None).result(timeout=10)
        assert never.error["type"] == "NoSeat" and never.error["message"] == "there is no seat for it"
    finally:
        pool.close()
    assert seats.freed == seats.taken == 2, "every seat is freed once its worker has exited"
