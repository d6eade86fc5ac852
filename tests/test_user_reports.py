"""What new users and ported pipelines hit (wrong results with exit 0, crashes, lost or misleading
records), each through the CLI as they ran it."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time

import pytest
from e2e import FLOW, MARK, SLOW_START, TRACEBACK, make_project


@pytest.fixture
def project(tmp_path):  # type: ignore[no-untyped-def]
    return make_project(tmp_path / "proj")


def _wait(predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _one_line_error(done, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert done.code == 2, done
    assert not __import__("re").search(TRACEBACK, done.err, __import__("re").M), done
    assert len([line for line in done.err.splitlines() if line.strip()]) == 1, done
    for fragment in fragments:
        assert fragment in done.err, (fragment, done)


# -- wrong results with exit 0 ------------------------------------------------------------------------


FUTURE_AS_VALUE = """
from flowlib import operator, workflow

@operator
def double(x: int) -> int:
    return 2 * x

@operator
def shout(text: str) -> str:
    return text.upper()

@workflow
def w(x: int = 2) -> str:
    value = double(x)
    return shout({use})
"""


@pytest.mark.parametrize(
    "use, what",
    [
        ('f"value is {value}"', "formatting"),
        ("str(value)", "str()"),
        ('"yes" if value == 4 else "no"', "=="),
        ('"yes" if value != 4 else "no"', "!="),
        ('"yes" if value else "no"', "a truth test"),
        ('"yes" if 4 in value else "no"', "'in'"),
        ('{value: 1} and "x"', "hashing"),
        ('"%s" % value', "str()"),
        ("value + 1", "+"),
    ],
)
def test_a_future_used_as_a_value_is_a_build_error_naming_the_line(project, use, what) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", FUTURE_AS_VALUE.format(use=use))
    done = project.flow("run", "p.py")
    _one_line_error(done, "p.py:15", f"({what})", "into an operator")


def test_repr_of_a_future_stays_harmless(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", FUTURE_AS_VALUE.format(use='repr(value) and "fine"'))
    assert project.flow("run", "p.py").code == 0


SAME_KEY = (
    MARK
    + """
import random
from flowlib import operator, workflow

@operator
def generate(n: int) -> list[float]:
    mark("generate")
    return [random.random() for _ in range(n)]

@operator
def fit(xs: list[float], region: str) -> float:
    return sum(xs)

@workflow
def w() -> dict[str, float]:
    return {region: fit(generate(3), region) for region in ["eu", "us", "asia"]}
"""
)


def test_nodes_with_one_cache_key_are_computed_once_and_a_rerun_agrees(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", SAME_KEY)
    first = project.flow("run", "p.py", "--json")
    assert first.code == 0, first
    assert len(project.marks("generate")) == 1
    nodes = {n["name"]: n for n in first.json()["nodes"]}
    assert nodes["generate"]["status"] == "succeeded"
    assert nodes["generate-2"]["status"] == nodes["generate-3"]["status"] == "cached"
    values = first.json()["outputs"]
    assert values["eu"] == values["us"] == values["asia"]
    second = project.flow("run", "p.py", "--json")
    assert second.json()["outputs"] == values  # a first run and its rerun agree
    why = project.flow("why", second.json()["run_id"], "generate-3", "--json").json()
    assert first.json()["run_id"] in why["compared_with"] and "'generate'" in why["compared_with"]


def test_a_workflow_return_annotation_is_checked_at_build(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "p.py",
        """
from flowlib import operator, workflow

@operator
def name() -> str:
    return "x"

@workflow
def w() -> int:
    return name()
""",
    )
    _one_line_error(project.flow("run", "p.py"), "p.py:", "workflow 'w', return value: expected int, got str")


# -- crashes ------------------------------------------------------------------------------------------------


NAMEDTUPLE_MAP = """
from typing import NamedTuple
from flowlib import operator, workflow

class Model(NamedTuple):
    region: str
    score: float

@operator
def train(region: str) -> Model:
    return Model(region, float(len(region)))

@operator
def best(scores: list[float], regions: list[str]) -> str:
    return regions[scores.index(max(scores))]

@operator
def count(models: list[Model]) -> int:
    return len(models)

@workflow
def w() -> dict:
    models = train.map(["eu", "asia", "us"])
    return {"best": best(models.score, models.region), "count": count(models), "models": models}
"""


def test_a_map_over_a_namedtuple_operator_runs_and_resumes(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", NAMEDTUPLE_MAP)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done
    outputs = done.json()["outputs"]
    assert outputs["best"] == "asia" and outputs["count"] == 3
    assert outputs["models"][1] == {"region": "asia", "score": 4.0}
    again = project.flow("resume", done.json()["run_id"], "--json")
    assert again.code == 0 and again.json()["outputs"] == outputs, again


SUB_TUPLE = """
from typing import NamedTuple
from flowlib import operator, workflow

class Split(NamedTuple):
    train: list[int]
    test: list[int]

@operator
def split(n: int) -> Split:
    xs = list(range(n))
    return (xs[:n // 2], xs[n // 2:])  # a plain tuple where the NamedTuple is declared

@operator
def total(xs: list[int]) -> int:
    return sum(xs)

@workflow
def halves(n: int) -> tuple[int, int]:
    s = split(n)
    return total(s.train), total(s.test)

@workflow
def w(n: int = 6) -> int:
    a, b = halves(n)
    return total([a, b])
"""


def test_a_sub_workflow_returning_a_tuple_unpacks_and_a_plain_tuple_becomes_the_namedtuple(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", SUB_TUPLE)
    done = project.flow("run", "p.py", "w", "--json")
    assert done.code == 0, done
    assert done.json()["outputs"] == 15


INTERNAL = """
from flowlib import operator, workflow

@operator
def pairs(n: int) -> list[int]:
    return list(range(n))

@operator
def one(x: int) -> int:
    return x

@workflow
def w() -> list[int]:
    return one.map(pairs(3))
"""


def test_an_internal_error_fails_the_run_and_never_leaves_it_running(project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", INTERNAL)
    # a lookup that breaks inside the scheduler, as a bug would
    project.write(
        "sitecustomize.py",
        """
from scheduler.store import lookups
def broken(self, keys):
    raise KeyError("return")
lookups.StoreLookups.cached = broken
""",
    )
    done = project.flow("run", "p.py", "--json", env={"PYTHONPATH": str(project.root)})
    assert done.code == 1, done
    shown = done.json()
    assert shown["status"] == "failed" and "internal error: KeyError" in shown["error"]
    assert all(n["status"] not in ("running", "queued", "pending") for n in shown["nodes"])
    assert "internal error" in done.err  # with the scheduler's traceback, for the bug report


# -- lost or misleading records ---------------------------------------------------------------------------


HANGS = """
import logging, sys, time
from flowlib import operator, workflow

log = logging.getLogger(__name__)

@operator(timeout=1.5)
def hang(x: int) -> int:
    print("before the hang", flush=True)
    log.info("a logging line")
    time.sleep(30)
    return x

@workflow
def w() -> int:
    return hang(1)
"""


def test_a_timed_out_attempt_keeps_its_log_and_logging_lines(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", HANGS)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 1, done
    node = done.json()["nodes"][0]
    assert node["error"]["type"] == "Timeout"
    assert 1.4 <= node["duration_s"] < 5, node  # time on the worker, from its start
    logs = project.flow("logs", done.json()["run_id"], "hang")
    assert "before the hang" in logs.out and "a logging line" in logs.out, logs


KILLED = """
import os, time
from flowlib import operator, workflow

@operator
def dies(x: int) -> int:
    print("last words", flush=True)
    time.sleep(0.1)
    os.kill(os.getpid(), 9)
    return x

@workflow
def w() -> int:
    return dies(1)
"""


def test_the_log_of_an_attempt_whose_worker_died_is_kept(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", KILLED)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 1 and done.json()["nodes"][0]["error"]["type"] == "WorkerDied", done
    logs = project.flow("logs", "latest", "dies")
    assert "last words" in logs.out, logs


FOLLOW = """
import time
from flowlib import operator, workflow

@operator
def talk(n: int) -> int:
    for i in range(n):
        print(f"line {i}", flush=True)
        time.sleep(0.3)
    return n

@workflow
def w(n: int = 8) -> int:
    return talk(n)
"""


def test_logs_follow_tails_a_running_node_until_it_ends(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", FOLLOW)
    running = project.popen("run", "p.py")
    assert _wait(lambda: project.flow("runs", "--json").json() != [])
    run_id = project.flow("runs", "--json").json()[0]["run_id"]
    follow = project.flow("logs", run_id, "talk", "--follow", timeout=60)
    running.wait(timeout=60)
    assert follow.code == 0, follow
    assert [line for line in follow.out.splitlines() if line.startswith("line")] == [
        f"line {i}" for i in range(8)
    ]


QUEUE = """
import time
from flowlib import operator, workflow

@operator(timeout=3.2)
def work(i: int) -> int:
    time.sleep(2.0)
    return i

@workflow
def w(n: int = 4) -> list[int]:
    return work.map(list(range(n)))
"""


def test_waiting_for_a_worker_is_queued_not_running_and_not_timed(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", QUEUE)
    project.write("flow.toml", "[executors.local]\nworkers = 2\n")
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done  # the last two waited 2 s for a worker: not counted in their timeout
    items = [n for n in done.json()["nodes"] if n["name"].startswith("work[")]
    assert all(1.9 <= n["duration_s"] < 3.0 for n in items), items
    with sqlite3.connect(project.root / ".flow" / "flow.db") as conn:
        rows = conn.execute("SELECT data FROM events WHERE kind = 'node_states'").fetchall()
    changes = {status: at for (data,) in rows for name, status, at in json.loads(data) if name == "work[3]"}
    assert changes["running"] - changes["queued"] >= 1.8, changes  # it waited for a worker, queued


def test_a_timeout_counts_from_the_operators_start_not_from_its_workers_start_up(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", SLOW_START)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done  # was: "timed out after 1 s" while the workers were starting
    assert done.json()["outputs"] == [0, 1]


def test_a_killed_run_reads_interrupted_before_and_after_its_resume(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", QUEUE.replace("timeout=1.6", "timeout=60").replace("1.0", "30"))
    process = project.popen("run", "p.py")
    assert _wait(
        lambda: (
            project.flow("runs", "--json").json() != []
            and "running" in {n["status"] for n in project.flow("status", "latest", "--json").json()["nodes"]}
        )
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    run_id = project.flow("runs", "--json").json()[0]["run_id"]
    before = project.flow("status", run_id, "--json").json()
    assert before["status"] == "interrupted"
    assert {n["status"] for n in before["nodes"]} <= {"interrupted", "succeeded"}
    project.write("p.py", QUEUE.replace("1.0", "0.01"))
    resumed = project.flow("resume", run_id, "--json")
    assert resumed.code == 0, resumed
    after = project.flow("status", run_id, "--json").json()
    assert after["status"] == "interrupted" and {n["status"] for n in after["nodes"]} <= {
        "interrupted",
        "succeeded",
    }
    assert [r["run_id"] for r in project.flow("runs", "--status", "interrupted", "--json").json()] == [run_id]


PARTIAL_MAP = (
    MARK
    + """
import os
from flowlib import operator, workflow

@operator
def items(n: int) -> list[int]:
    return list(range(n))

@operator
def work(i: int) -> int:
    mark("work", str(i))
    if i == 2 and os.path.exists("broken"):
        raise ValueError("bad item")
    return i

@workflow
def w(n: int = 3) -> list[int]:
    return work.map(items(n))
"""
)


def test_resume_dry_run_lists_map_items_one_by_one_as_the_resume_does(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", PARTIAL_MAP)
    project.write("broken", "")
    failed = project.flow("run", "p.py", "--json")
    assert failed.code == 1, failed
    (project.root / "broken").unlink()  # the fix is outside the code: nothing else changed
    plan = project.flow("resume", failed.json()["run_id"], "--dry-run", "--json").json()
    actions = {step["name"]: (step["action"], step["reasons"]) for step in plan}
    assert actions["items"] == ("reuse", ["succeeded before"])
    assert actions["work[0]"] == actions["work[1]"] == ("reuse", ["succeeded before"])
    assert actions["work[2]"] == ("rerun", ["failed"])
    text = project.flow("resume", failed.json()["run_id"], "--dry-run").out
    assert "work[0]" in text and "work[2]" in text
    resumed = project.flow("resume", failed.json()["run_id"], "--json")
    assert resumed.code == 0 and resumed.json()["outputs"] == [0, 1, 2], resumed
    ran = [line.split()[0] for line in project.marks("work")]
    assert ran.count("2") == 2 and ran.count("0") == 1 and ran.count("1") == 1, ran


FLOAT_DEFAULT = """
from flowlib import operator, workflow

@operator
def scale(t: float) -> float:
    return t

@workflow
def w(t: float = 2) -> float:
    return scale(t)
"""


def test_an_int_default_of_a_float_parameter_is_the_float_the_command_line_gives(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", FLOAT_DEFAULT)
    first = project.flow("run", "p.py", "--json")
    assert first.code == 0 and first.json()["outputs"] == 2.0 and isinstance(first.json()["outputs"], float)
    plan = project.flow("resume", first.json()["run_id"], "--dry-run", "--json")
    assert plan.json() == [{"name": "scale", "action": "reuse", "reasons": ["succeeded before"]}], plan
    again = project.flow("run", "p.py", "-p", "t=2", "--json")
    assert [n["status"] for n in again.json()["nodes"]] == ["cached"], again


USER_CLASSES = """
from typing import NamedTuple
from flowlib import operator, workflow

class Point(NamedTuple):
    x: int
    y: int

class Box:
    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"Box({self.size})"

@operator
def make() -> dict:
    return {"point": Point(1, 2), "pair": (3, 4), "box": Box(5)}

@workflow
def w() -> dict:
    return make()
"""


def test_outputs_that_need_the_pipelines_classes_load_by_importing_it_never_as_corrupt(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", USER_CLASSES)
    ran = project.flow("run", "p.py", "--json")
    assert ran.code == 0, ran
    shown = {"point": {"x": 1, "y": 2}, "pair": [3, 4], "box": "Box(5)"}
    assert ran.json()["outputs"] == shown
    run_id = ran.json()["run_id"]
    assert project.flow("status", run_id, "--json").json()["outputs"] == shown
    outputs = project.flow("outputs", run_id, "--json")
    assert outputs.code == 0 and outputs.json() == shown, outputs
    node = project.flow("outputs", run_id, "make", "--json")
    assert node.code == 0 and node.json() == {"return": shown}, node
    assert "orrupt" not in outputs.err + node.err


def test_a_cancelled_runs_summary_counts_its_cancelled_nodes(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", QUEUE.replace("timeout=1.6", "timeout=60").replace("1.0", "30"))
    process = project.popen("run", "p.py")
    assert _wait(lambda: project.flow("runs", "--json").json() != [])
    time.sleep(1.0)
    assert project.flow("cancel", "latest").code == 0
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    summary = err.strip().splitlines()[-1]
    assert "cancelled" in summary and "0 cancelled" not in summary, summary


def test_why_on_a_map_gather_explains_and_points_at_its_items(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", PARTIAL_MAP)
    done = project.flow("run", "p.py", "--json")
    answer = project.flow("why", done.json()["run_id"], "work").out
    assert "gathers the items of a map" in answer and "work[0]" in answer, answer


METRICS = """
from flowlib import current, operator, workflow

@operator
def fit(x: int) -> int:
    print("training", x)
    current.log_metric("loss", 0.5, step=1)
    return x

@workflow
def w() -> int:
    return fit(1)
"""


def test_a_cached_node_shows_the_logs_and_metrics_of_the_run_that_computed_it(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", METRICS)
    first = project.flow("run", "p.py", "--json").json()["run_id"]
    second = project.flow("run", "p.py", "--json").json()["run_id"]
    logs = project.flow("logs", second, "fit").out
    assert "training 1" in logs and f"from run {first}" in logs, logs
    metrics = project.flow("metrics", second, "--json").json()
    assert metrics == [{**metrics[0], "name": "loss", "value": 0.5, "from_run": first}]


FLAKY = (
    MARK
    + """
from flowlib import operator, workflow

@operator(retries=2)
def flaky(x: int) -> int:
    mark("flaky")
    import pathlib
    if len(pathlib.Path("marks/flaky").read_text().splitlines()) < 3:
        raise RuntimeError("not yet")
    return x

@workflow
def w() -> int:
    return flaky(1)
"""
)


def test_retries_are_printed_as_they_happen(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", FLAKY)
    done = project.flow("run", "p.py")
    assert done.code == 0, done
    assert "retrying        flaky (attempt 2/3): RuntimeError: not yet" in done.err
    assert "retrying        flaky (attempt 3/3): RuntimeError: not yet" in done.err


def test_an_unknown_run_names_the_database(project) -> None:  # type: ignore[no-untyped-def]
    done = project.flow("status", "nosuchrun")
    _one_line_error(done, "no run 'nosuchrun' in", str(project.root / ".flow" / "flow.db"))


def test_the_home_is_the_project_roots_from_any_subfolder(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", METRICS)
    assert project.flow("run", "p.py").code == 0
    sub = project.root / "notebooks" / "deep"
    sub.mkdir(parents=True)
    env = {k: v for k, v in project.env.items() if k != "FLOW_HOME"}
    listed = subprocess.run(
        [FLOW, "runs", "--json"], cwd=sub, env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1
    assert not (sub / ".flow").exists()


def test_a_value_nested_too_deeply_or_a_nul_in_a_file_path_is_one_line(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "deep.py",
        """
from typing import Any
from flowlib import File, operator, workflow

@operator
def echo(v: Any) -> int:
    return 1

@workflow
def deep() -> int:
    v: Any = []
    for _ in range(5000):
        v = [v]
    return echo(v)

@workflow
def nul() -> int:
    return echo(File("a\\x00b"))
""",
    )
    for workflow, fragment in (("deep", "nested too deeply"), ("nul", "cannot read it")):
        done = project.flow("run", "deep.py", workflow)
        assert done.code == 2, done
        assert len(done.err.strip().splitlines()) == 1 and fragment in done.err, done


def test_workers_below_one_is_a_configuration_error_naming_the_key(project) -> None:  # type: ignore[no-untyped-def]
    project.write("flow.toml", "[executors.local]\nworkers = -1\n")
    project.write(
        "p.py",
        "from flowlib import operator, workflow\n@operator\ndef one() -> int:\n    return 1\n@workflow\ndef w() -> int:\n    return one()\n",
    )
    done = project.flow("run", "p.py")
    assert done.code == 2, done
    assert "[executors.local] workers: expected at least 1, got -1" in done.err, done
