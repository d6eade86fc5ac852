"""`flow run` end to end: real SQLite files, real worker processes, real signals."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time

import pytest
from e2e import MARK, TRACEBACK, Project, alive, make_project


@pytest.fixture
def project(tmp_path) -> Project:
    return make_project(tmp_path / "proj")


BRANCHES = (
    MARK
    + """
from flowlib import operator, workflow, current

@operator
def load(n: int) -> list[int]:
    print("loading", n)
    current.logger.info("logger line for %d", n)
    current.log_metric("rows", n, step=1)
    return list(range(n))

@operator
def broken(xs: list[int]) -> int:
    raise ValueError("broken-marker " + str(len(xs)))

@operator
def count(xs: list[int]) -> int:
    mark("count")
    return len(xs)

@operator
def both(a: int, b: int) -> int:
    return a + b

@workflow
def branches(n: int = 3) -> int:
    xs = load(n)
    return both(broken(xs), count(xs))
"""
)


def test_success_records_outputs_logs_and_metrics(project):
    project.write("p.py", BRANCHES.replace("return both(broken(xs), count(xs))", "return count(xs)"))
    run = project.flow("run", "p.py", "-p", "n=5", "--json")
    assert run.code == 0, run
    result = run.json()
    assert result["outputs"] == 5 and result["status"] == "succeeded"
    assert {n["name"]: n["attempts"] for n in result["nodes"]} == {"load": 1, "count": 1}
    logs = project.flow("logs", result["run_id"], "load")
    assert "loading 5" in logs.out and "logger line for 5" in logs.out, logs
    metrics = project.flow("metrics", result["run_id"], "--json").json()
    assert metrics == [
        {"node": "load", "attempt": 1, "name": "rows", "value": 5.0, "step": 1, "time": metrics[0]["time"]}
    ]
    outputs = project.flow("outputs", result["run_id"], "load", "--json").json()
    assert outputs == {"return": [0, 1, 2, 3, 4]}


def test_failure_propagates_and_the_independent_branch_finishes(project):
    project.write("p.py", BRANCHES)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 1, done
    nodes = {n["name"]: n for n in done.json()["nodes"]}
    assert {k: v["status"] for k, v in nodes.items()} == {
        "load": "succeeded",
        "broken": "failed",
        "count": "succeeded",
        "both": "upstream_failed",
    }
    assert "broken-marker 3" in nodes["broken"]["error"]["message"]
    # the user's traceback names their file and line, not our worker
    assert 'p.py", line' in nodes["broken"]["error"]["traceback"]
    assert "executors/worker.py" not in nodes["broken"]["error"]["traceback"]
    plain = project.flow("run", "p.py")
    assert plain.code == 1 and "broken-marker" in plain.err


def test_fail_fast_stops_early(project):
    project.write(
        "p.py",
        MARK
        + """
import time
from flowlib import operator, workflow

@operator
def boom(x: int) -> int:
    raise RuntimeError("boom")

@operator
def slow(x: int) -> int:
    time.sleep(x)
    mark("slow")
    return x

@workflow
def ff() -> list[int]:
    return [boom(0), slow(60)]
""",
    )
    started = time.monotonic()
    done = project.flow("run", "p.py", "--fail-fast", "--json")
    assert done.code == 1, done
    assert time.monotonic() - started < 45  # it did not wait for slow's minute
    assert {n["name"]: n["status"] for n in done.json()["nodes"]}["slow"] == "cancelled"
    assert project.marks("slow") == []


RETRY = """
from flowlib import operator, workflow, current

@operator(retries=2, retry_delay=0.1)
def flaky(x: int) -> int:
    if current.attempt < 3:
        raise RuntimeError(f"attempt {current.attempt} fails")
    return x * current.attempt

@workflow
def retrying(x: int = 2) -> int:
    return flaky(x)
"""


def test_retries_count_attempts(project):
    project.write("p.py", RETRY)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done
    result = done.json()
    assert result["outputs"] == 6
    assert result["nodes"][0]["attempts"] == 3
    logs = project.flow("logs", result["run_id"])
    assert logs.out.count("=== flaky (attempt") == 3


SEES_UPSTREAM = """
import os, sqlite3
from flowlib import operator, workflow, current

def recorded(name: str) -> str:
    with sqlite3.connect(os.path.join(os.environ["FLOW_HOME"], "flow.db")) as db:
        row = db.execute(
            "SELECT status FROM nodes WHERE run_id = ? AND name = ?", (current.run_id, name)
        ).fetchone()
    return row[0]

@operator
def first(x: int) -> int:
    return x + 1

@operator
def after(x: int, upstream: str) -> str:
    return recorded(upstream)

@workflow
def seen(n: int = 5) -> list[str]:
    x, seen = first(0), []
    for i in range(n):
        seen.append(after(x, "first" if i == 0 else "first-" + str(i + 1)))
        x = first(x)
    return seen
"""


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_a_node_starts_only_once_its_upstreams_success_is_committed(project, executor):
    # a node is held by its worker while the scheduler commits, and starts after (crash safety)
    project.write("p.py", SEES_UPSTREAM)
    done = project.flow("run", "p.py", "--executor", executor, "--json")
    assert done.code == 0, done
    assert done.json()["outputs"] == ["succeeded"] * 5


SQUARES = """
from flowlib import operator, workflow

@operator
def numbers(n: int) -> list[int]:
    return list(range(n))

@operator
def square(x: int) -> int:
    return x * x

@workflow
def squares(n: int = 0) -> list[int]:
    return square.map(numbers(n))
"""

UNFROZEN_STATES = (
    SQUARES
    + """
import gc

@operator
def unfrozen_node_states(squares: list[int]) -> int:
    # what the collector's passes walk (gc.get_objects leaves frozen objects out)
    return sum(type(o).__name__ == "NodeState" for o in gc.get_objects())

@workflow
def counts(n: int = 3000) -> int:
    return unfrozen_node_states(square.map(numbers(n)))
"""
)


def test_a_map_expanded_while_the_run_goes_on_is_kept_out_of_the_collectors_passes(project):
    # `flow run` freezes what lives to the run's end (gc.freeze); a map over a future's list gets
    # its items' states only later, and they are frozen then too (the inline executor runs the
    # operators in the scheduler's process, so they see its garbage collector)
    project.write("p.py", UNFROZEN_STATES)
    done = project.flow("run", "p.py", "counts", "--executor", "inline", "--json")
    assert done.code == 0, done
    assert done.json()["outputs"] < 100  # of 3,004 node states


def test_the_event_log_records_every_state_change_in_order(project):
    project.write("p.py", RETRY)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done
    with sqlite3.connect(project.root / ".flow" / "flow.db") as db:
        rows = db.execute(
            "SELECT node, kind, data FROM events WHERE run_id = ? ORDER BY id", (done.json()["run_id"],)
        ).fetchall()
    changes = []
    for node, kind, data in rows:
        if kind == "node_states":  # each scheduling step's changes, as [node, status, time]
            changes += [(name, "node_" + status) for name, status, _ in json.loads(data)]
        elif kind.startswith("run_"):
            changes.append((node, kind))
    attempt = [("flaky", "node_running"), ("flaky", "node_queued")]
    assert changes == [
        (None, "run_running"),
        ("flaky", "node_queued"),
        *attempt,  # attempt 1 fails and is queued again
        *attempt,
        ("flaky", "node_running"),
        ("flaky", "node_succeeded"),
        (None, "run_succeeded"),
    ]
    times = [t for _, kind, data in rows if kind == "node_states" for _, _, t in json.loads(data)]
    assert times == sorted(times)
    assert [kind for node, kind, _ in rows if kind == "retry"] == ["retry", "retry"]


def test_local_workers_import_the_pipeline_before_their_first_task(project):
    project.write(
        "p.py",
        MARK
        + """
import sys, time
mark("imported", repr(time.time()))
print("module-level output")  # must not reach stdout (--json) from a worker

from flowlib import operator, workflow

@operator
def pid() -> int:
    return os.getpid()

@workflow
def which() -> int:
    return pid()
""",
    )
    done = project.flow("run", "p.py", "--executor", "local", "--json")
    assert done.code == 0, done
    worker = done.json()["outputs"]
    with sqlite3.connect(project.root / ".flow" / "flow.db") as db:
        (started,) = db.execute("SELECT started_at FROM attempts WHERE node = 'pid'").fetchone()
    imports = {int(pid): float(at) for at, pid in (line.split() for line in project.marks("imported"))}
    assert worker in imports and imports[worker] < started  # imported before the task began


def test_the_local_pool_grows_to_run_as_many_nodes_at_once_as_it_has_workers(project):
    project.write("flow.toml", "[executors.local]\nworkers = 3\n")
    project.write(
        "p.py",
        """
import os, pathlib, time
from flowlib import operator, workflow

@operator
def meet(i: int) -> int:
    folder = pathlib.Path("arrived")
    folder.mkdir(exist_ok=True)
    (folder / str(i)).touch()
    deadline = time.monotonic() + 20
    while len(list(folder.iterdir())) < 3:  # all three must run at once to get past here
        if time.monotonic() > deadline:
            raise TimeoutError("the others never started")
        time.sleep(0.01)
    return os.getpid()

@workflow
def three() -> list[int]:
    return meet.map([0, 1, 2])
""",
    )
    done = project.flow("run", "p.py", "--executor", "local", "--json")
    assert done.code == 0, done
    assert len(set(done.json()["outputs"])) == 3


def test_retries_exhausted_fail(project):
    project.write("p.py", RETRY.replace("retries=2", "retries=1"))
    done = project.flow("run", "p.py", "--json")
    assert done.code == 1
    node = done.json()["nodes"][0]
    assert (
        node["status"] == "failed" and node["attempts"] == 2 and "attempt 2 fails" in node["error"]["message"]
    )


def test_timeout_kills_the_attempt(project):
    project.write(
        "p.py",
        """
import time
from flowlib import operator, workflow

@operator(timeout=1)
def sleepy(x: int) -> int:
    time.sleep(60)
    return x

@operator
def quick(x: int) -> int:
    return x

@workflow
def timing() -> list[int]:
    return [sleepy(1), quick(2)]
""",
    )
    started = time.monotonic()
    done = project.flow("run", "p.py", "--json")
    assert time.monotonic() - started < 20
    nodes = {n["name"]: n for n in done.json()["nodes"]}
    assert done.code == 1
    assert nodes["sleepy"]["status"] == "failed"
    assert (
        nodes["sleepy"]["error"]["type"] == "Timeout"
        and "timed out after 1 s" in nodes["sleepy"]["error"]["message"]
    )
    assert nodes["quick"]["status"] == "succeeded"


def test_a_local_timeout_fires_while_an_inline_node_holds_the_scheduler(project):
    # inline nodes run on the scheduler's thread: the local pool then keeps its own loop thread
    project.write(
        "p.py",
        """
import time
from flowlib import operator, workflow

@operator
def first(x: int) -> int:
    return x

@operator(executor="inline")
def hog(x: int) -> int:
    time.sleep(6)
    return x

@operator(timeout=1)
def sleepy(x: int) -> int:
    time.sleep(60)
    return x

@workflow
def mixed() -> list[int]:
    return [hog(first(1)), sleepy(2)]
""",
    )
    done = project.flow("run", "p.py", "--json")
    assert done.code == 1, done
    with sqlite3.connect(project.root / ".flow" / "flow.db") as db:
        started, ended = db.execute(
            "SELECT started_at, ended_at FROM attempts WHERE run_id = ? AND node = 'sleepy'",
            (done.json()["run_id"],),
        ).fetchone()
    assert ended - started < 4  # killed after 1 s, not once the inline node let go of the scheduler


def test_worker_death_fails_only_its_attempt(project):
    project.write(
        "p.py",
        """
import os, signal
from flowlib import operator, workflow

@operator
def killed(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return x

@operator
def exits(x: int) -> int:
    os._exit(3)

@operator
def segfault(x: int) -> int:
    import ctypes
    ctypes.string_at(0)
    return x

@operator
def fine(x: int) -> int:
    return x + 1

@workflow
def deaths() -> list[int]:
    return [killed(1), exits(2), segfault(3), fine(4)]
""",
    )
    done = project.flow("run", "p.py", "--json")
    assert done.code == 1, done
    nodes = {n["name"]: n for n in done.json()["nodes"]}
    assert "SIGKILL" in nodes["killed"]["error"]["message"]
    assert "exited with code 3" in nodes["exits"]["error"]["message"]
    assert "SIGSEGV" in nodes["segfault"]["error"]["message"]
    assert nodes["fine"]["status"] == "succeeded"


SLEEPER = (
    MARK
    + """
import os, time
from flowlib import operator, workflow

@operator
def nap(seconds: float) -> float:
    mark("nap", str(os.getpid()))
    time.sleep(seconds)
    return seconds

@workflow
def sleeper(seconds: float = 30.0) -> list[float]:
    return [nap(seconds), nap(seconds + 1)]
"""
)


def _wait_for(predicate, timeout=30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _worker_pids(project: Project) -> set[int]:
    return {int(line.split()[-1]) for line in project.marks("nap")}


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if alive(pid)}


def test_ctrl_c_cancels_the_run(project):
    project.write("p.py", SLEEPER)
    process = project.popen("run", "p.py", "--json")
    assert _wait_for(lambda: len(project.marks("nap")) == 2), "the nodes never started"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert re.search(TRACEBACK, err, re.MULTILINE) is None, err
    runs = project.flow("runs", "--json").json()
    assert runs[0]["status"] == "cancelled"
    status = project.flow("status", runs[0]["run_id"], "--json").json()
    assert {n["status"] for n in status["nodes"]} == {"cancelled"}
    assert _wait_for(lambda: not _alive(_worker_pids(project)), 10), "workers outlived the cancelled run"


def test_flow_cancel_stops_a_running_run(project):
    project.write("p.py", SLEEPER)
    process = project.popen("run", "p.py")
    assert _wait_for(lambda: len(project.marks("nap")) == 2)
    run_id = project.flow("runs", "--json").json()[0]["run_id"]
    assert project.flow("cancel", run_id).code == 0
    process.communicate(timeout=30)
    assert process.returncode == 130
    assert project.flow("status", run_id, "--json").json()["status"] == "cancelled"


def test_sigkill_of_the_scheduler_leaves_no_orphan_workers(project):
    project.write("p.py", SLEEPER)
    process = project.popen("run", "p.py")
    assert _wait_for(lambda: len(project.marks("nap")) == 2)
    workers = _worker_pids(project)
    assert _alive(workers) == workers
    process.kill()
    process.wait(timeout=10)
    assert _wait_for(lambda: not _alive(workers), 10), f"orphans left: {_alive(workers)}"


def test_four_concurrent_runs_share_one_sqlite_home(project):
    project.write(
        "p.py",
        """
from flowlib import operator, workflow

@operator
def square(x: int) -> int:
    return x * x

@workflow
def many(n: int = 20) -> list[int]:
    return square.map(list(range(n)))
""",
    )
    processes = [project.popen("run", "p.py", "-p", f"n={20 + i}", "--no-cache", "--json") for i in range(4)]
    results = [process.communicate(timeout=120) for process in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
        assert "database is locked" not in err
    assert len(project.flow("runs", "--json").json()) == 4


def test_unsatisfiable_resources_exit_2_before_recording(project):
    project.write(
        "p.py",
        """
from flowlib import operator, workflow, Resources

@operator(resources=Resources(cpus=64))
def huge(x: int) -> int:
    return x

@workflow
def greedy() -> int:
    return huge(1)
""",
    )
    done = project.flow("run", "p.py")
    assert done.code == 2 and "huge" in done.err and "64" in done.err, done
    assert re.search(TRACEBACK, done.err, re.MULTILINE) is None
    assert project.flow("runs", "--json").json() == []


def test_dynamic_map_expands_when_the_list_resolves(project):
    project.write(
        "p.py",
        MARK
        + """
from flowlib import operator, workflow

@operator
def numbers(n: int) -> list[int]:
    return list(range(n))

@operator
def square(x: int, offset: int) -> int:
    mark("square", str(x))
    return x * x + offset

@operator
def total(xs: list[int]) -> int:
    return sum(xs)

@workflow
def squares(n: int = 4) -> int:
    return total(square.map(numbers(n), offset=1))
""",
    )
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done
    assert done.json()["outputs"] == sum(x * x + 1 for x in range(4))
    names = {n["name"] for n in done.json()["nodes"]}
    assert {"square[0]", "square[3]", "square"} <= names
    assert len(project.marks("square")) == 4
    grown = project.flow("run", "p.py", "-p", "n=6", "--json")
    assert grown.code == 0
    assert len(project.marks("square")) == 6  # only the two new items ran
    statuses = {n["name"]: n["status"] for n in grown.json()["nodes"]}
    assert statuses["square[0]"] == "cached" and statuses["square[5]"] == "succeeded"


def test_empty_dynamic_map(project):
    project.write("p.py", SQUARES)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0 and done.json()["outputs"] == [], done


def test_inline_executor_runs_in_process(project):
    project.write("p.py", BRANCHES.replace("return both(broken(xs), count(xs))", "return count(xs)"))
    done = project.flow("run", "p.py", "--executor", "inline", "--json")
    assert done.code == 0 and done.json()["outputs"] == 3, done


def test_unknown_executor_is_exit_2(project):
    project.write("p.py", RETRY)
    done = project.flow("run", "p.py", "--executor", "nope")
    assert done.code == 2 and "unknown executor 'nope'" in done.err and "local" in done.err


SPAWNER = (
    MARK
    + """
import subprocess, time
from flowlib import operator, workflow

@operator(timeout=TIMEOUT)
def spawner(seconds: int) -> int:
    child = subprocess.Popen(["sleep", str(seconds)])
    mark("child", str(child.pid))
    time.sleep(seconds)
    return child.pid

@workflow
def spawning(seconds: int = 30) -> int:
    return spawner(seconds)
"""
)


def _child_pids(project: Project) -> set[int]:
    return {int(line.split()[1]) for line in project.marks("child")}


def test_a_timeout_kills_what_the_operator_started(project):
    project.write("p.py", SPAWNER.replace("TIMEOUT", "1"))
    done = project.flow("run", "p.py", "--json")
    assert done.code == 1
    children = _child_pids(project)
    assert children and _wait_for(lambda: not _alive(children), 10), f"left behind: {_alive(children)}"


def test_sigkill_of_the_scheduler_kills_what_operators_started(project):
    project.write("p.py", SPAWNER.replace("TIMEOUT", "None"))
    process = project.popen("run", "p.py")
    assert _wait_for(lambda: project.marks("child"))
    process.kill()
    process.wait(timeout=10)
    children = _child_pids(project)
    assert _wait_for(lambda: not _alive(children), 10), f"left behind: {_alive(children)}"
