"""`flow sweep` end to end: real `flow` processes on real SQLite, pipelines that mark each real
execution of an operator in a file (marks/NAME, one line each)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import time
from typing import Any

import pytest
from conftest import FLOW

pytestmark = pytest.mark.slow

COMMON = """
import os, pathlib, time
from flowlib import current, operator, workflow

def mark(name: str, text: str) -> None:
    # on a server, workers run a snapshot of this file elsewhere: MARKS then says where to write
    folder = pathlib.Path(os.environ.get("MARKS") or pathlib.Path(__file__).parent / "marks")
    folder.mkdir(exist_ok=True)
    with open(folder / name, "a") as f:
        f.write(text + "\\n")

@operator
def prepare(n: int) -> list[float]:
    mark("prepare", "ran")
    time.sleep(0.3)  # long enough for two trials started together to both compute it
    return [float(i) for i in range(n)]
"""

QUADRATIC = (
    COMMON
    + """
@operator
def score(data: list[float], x: float, k: int) -> dict[str, float]:
    mark("score", f"{x} {k}")
    return {"loss": (x - 3.0) ** 2 + k, "size": float(len(data))}

@workflow
def quadratic(x: float = 0.0, k: int = 0, n: int = 50) -> dict[str, float]:
    return score(prepare(n), x, k)
"""
)

METRIC = (
    COMMON
    + """
@operator
def fit(data: list[float], lr: float, epochs: int) -> float:
    accuracy = 0.0
    for epoch in range(epochs):
        accuracy = 1.0 - abs(lr - 0.1) - 0.5 / (epoch + 1)
        current.log_metric("accuracy", accuracy, step=epoch)
    return accuracy * len(data)

@workflow
def learn(lr: float = 0.1, epochs: int = 1) -> float:
    return fit(prepare(20), lr, epochs)
"""
)

FLAKY = """
from flowlib import operator, workflow

@operator
def odd_only(x: int) -> dict[str, float]:
    if x % 2 == 0:
        raise ValueError(f"x={x} is even")
    return {"loss": float(x)}

@workflow
def flaky(x: int = 1) -> dict[str, float]:
    return odd_only(x)
"""

DESCENT = (
    COMMON
    + """
@operator
def descend(data: list[float], x: int, steps: int) -> dict[str, float]:
    for step in range(steps):
        mark(f"steps-{x}", str(step))
        current.log_metric("loss", float(x), step=step)
        time.sleep(0.1)
    return {"loss": float(x)}

@workflow
def descent(x: int = 1, steps: int = 20) -> dict[str, float]:
    return descend(prepare(10), x, steps)
"""
)

SLOW = (
    COMMON
    + """
@operator
def slow_fit(data: list[float], x: int) -> dict[str, float]:
    mark("fit", f"start {x}")
    time.sleep(0.8)
    mark("fit", f"done {x}")
    return {"loss": float(x)}

@workflow
def slow(x: int = 1) -> dict[str, float]:
    return slow_fit(prepare(10), x)
"""
)


def marks(project: Any, name: str) -> list[str]:
    path = project.root / "marks" / name
    return path.read_text().splitlines() if path.exists() else []


def sweep_runs(project: Any, sweep: str) -> list[sqlite3.Row]:
    """The runs of a sweep's trials, oldest first (none while the database is still being made)."""
    path = project.root / ".flow" / "flow.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(
            "SELECT id, trial, status, resumed_from FROM runs WHERE sweep = ? ORDER BY created_at", (sweep,)
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_trials_and_the_best_agree_with_the_objective_and_data_preparation_runs_once(project: Any) -> None:
    from flowlib import get_run
    from flowlib.config import load

    project.write("pipeline.py", QUADRATIC)
    args = ["sweep", "pipeline.py", "--space", "x=float(0,6)", "--space", "k=choice(0,1,2)"]
    args += ["--objective", "loss", "--trials", "5", "--parallel", "2", "--seed", "1", "--json"]
    done = project.flow(*args)
    assert done.code == 0, str(done)
    status = done.json()
    assert (status["name"], status["objective"], status["direction"]) == ("quadratic", "loss", "minimize")
    trials = status["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    for trial in trials:
        x, k = trial["params"]["x"], trial["params"]["k"]
        assert isinstance(x, float) and type(k) is int and 0 <= x <= 6 and k in (0, 1, 2)
        assert trial["state"] == "complete"
        assert trial["value"] == pytest.approx((x - 3.0) ** 2 + k)
        run = get_run(trial["run_id"])
        assert run.status == "succeeded" and run.outputs["loss"] == pytest.approx(trial["value"])
    best = min(trials, key=lambda t: t["value"])
    assert status["best"] == {
        "trial": best["number"],
        "run_id": best["run_id"],
        "params": best["params"],
        "value": best["value"],
    }
    assert json.loads(project.flow("sweep", "best", "quadratic", "--json").out) == status["best"]
    # every trial is a run linked to the sweep; the data step ran once for all five
    assert sorted(r["trial"] for r in sweep_runs(project, "quadratic")) == [0, 1, 2, 3, 4]
    assert marks(project, "prepare") == ["ran"]
    assert len(marks(project, "score")) == 5
    text = project.flow("sweep", "status", "quadratic")
    assert text.code == 0 and f"best: trial {best['number']}" in text.out

    # the UI's read model: the trials table, the objective over trials, parallel coordinates
    from scheduler.runs import connect
    from scheduler.sweeps.read import sweep_view

    view = sweep_view(connect(load()), "quadratic")
    assert [row["run_status"] for row in view["trials"]] == ["succeeded"] * 5
    assert all(row["duration_s"] is not None for row in view["trials"])
    curve = view["objective_over_trials"]
    assert [point["value"] for point in curve] == [t["value"] for t in trials]
    assert curve[-1]["best_so_far"] == best["value"]
    assert all(a["best_so_far"] >= b["best_so_far"] for a, b in itertools.pairwise(curve))
    assert view["parameters"] == [
        {"name": "x", "spec": "float(0.0,6.0)", "kind": "linear", "low": 0.0, "high": 6.0},
        {"name": "k", "spec": "choice(0,1,2)", "kind": "choice", "choices": [0, 1, 2]},
    ]
    assert [line["params"] for line in view["lines"]] == [t["params"] for t in trials]


def test_a_metric_is_an_objective_and_the_same_sweep_again_continues_it(project: Any) -> None:
    project.write("pipeline.py", METRIC)
    args = ["sweep", "pipeline.py", "--space", "lr=loguniform(0.01,1)", "--space", "epochs=int(1,3)"]
    args += ["--objective", "accuracy", "--direction", "maximize", "--sampler", "random", "--seed", "3"]
    first = project.flow(*args, "--trials", "3", "--json")
    assert first.code == 0, str(first)
    for trial in first.json()["trials"]:
        lr, epochs = trial["params"]["lr"], trial["params"]["epochs"]
        assert trial["value"] == pytest.approx(1.0 - abs(lr - 0.1) - 0.5 / epochs)  # the metric's last value
    again = project.flow(*args, "--trials", "5", "--json")
    assert again.code == 0, str(again)
    status = again.json()
    assert len(status["trials"]) == 5 and status["trials"][:3] == first.json()["trials"]
    assert max(t["value"] for t in status["trials"]) == status["best"]["value"]
    assert marks(project, "prepare") == ["ran"]  # the second invocation found it in the cache
    changed = project.fails(*args, "--space", "x=int(1,2)")  # no such parameter: nothing changes
    assert "has no parameter 'x'" in changed
    other = project.fails("sweep", "pipeline.py", "--space", "lr=float(0.1,0.2)", "--objective", "accuracy")
    assert "sweep 'learn' exists with another objective, space" in other


def test_a_bad_space_or_an_unknown_parameter_is_exit_2_and_runs_nothing(project: Any) -> None:
    project.write("pipeline.py", QUADRATIC)
    base = ("sweep", "pipeline.py", "--objective", "loss")
    cases = [
        (
            ("--space", "depth=int(1,3)"),
            "workflow 'quadratic' has no parameter 'depth'; its parameters: x, k, n",
        ),
        (("--space", "x=uniform(0,1)"), "--space x=uniform(0,1): expected int(lo,hi)"),
        (("--space", "k=float(0,1)"), "parameter 'k' of workflow 'quadratic' is int"),
        (("--space", "x=float(0,1)", "--sampler", "grid"), "--sampler grid: parameter 'x' is float(0.0,1.0)"),
        (("--space", "x=float(0,1)", "-p", "x=2"), "parameter 'x' is given both as -p and as --space"),
        ((), "give --space NAME=SPEC at least once"),
    ]
    for extra, expected in cases:
        project.fails(*base, *extra, expect=[expected])
    project.fails("sweep", "pipeline.py", "--space", "x=float(0,1)", expect=["--objective KEY is required"])
    project.fails("sweep", "status", "quadratic", expect=["no sweep named 'quadratic'"])
    project.fails(
        *base, "--space", "x=float(0,1)", "--server", "http://127.0.0.1:9",
        expect=["cannot reach the server at http://127.0.0.1:9"],
    )  # fmt: skip
    assert marks(project, "prepare") == [] and marks(project, "score") == []
    assert project.flow("runs", "--json").json() == []


def test_an_exported_flow_server_is_where_the_trials_go(project: Any) -> None:
    project.write("pipeline.py", QUADRATIC)
    done = subprocess.run(
        [FLOW, "sweep", "pipeline.py", "--space", "x=float(0,1)", "--objective", "loss", "--trials", "1"],
        cwd=project.root,
        env={**project.env, "FLOW_SERVER": "http://127.0.0.1:9"},  # as for the other commands
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot reach the server at http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr and marks(project, "prepare") == []
    db = f"sqlite:///{project.root / 'here.db'}"  # a database named on the command line beats it
    here = subprocess.run(
        [FLOW, "sweep", "pipeline.py", "--space", "x=float(0,1)", "--objective", "loss", "--trials", "1",
         "--db", db, "--json"],
        cwd=project.root, env={**project.env, "FLOW_SERVER": "http://127.0.0.1:9"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert here.returncode == 0, here.stderr
    assert [t["state"] for t in json.loads(here.stdout)["trials"]] == ["complete"]
    both = subprocess.run(
        [FLOW, "sweep", "status", "quadratic", "--db", db, "--server", "http://127.0.0.1:9"],
        cwd=project.root, env=project.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert both.returncode == 2 and "--db and --server" in both.stderr, both.stderr


def test_failing_trials_are_recorded_and_the_sweep_goes_on(project: Any) -> None:
    project.write("pipeline.py", FLAKY)
    done = project.flow(
        "sweep", "pipeline.py", "--space", "x=choice(1,2,3,4)", "--sampler", "grid", "--trials", "4",
        "--objective", "loss", "--json",
    )  # fmt: skip
    assert done.code == 0, str(done)
    trials = {t["params"]["x"]: t for t in done.json()["trials"]}
    assert sorted(trials) == [1, 2, 3, 4]
    for x, trial in trials.items():
        if x % 2:
            assert (trial["state"], trial["value"]) == ("complete", float(x))
        else:
            assert trial["state"] == "failed" and f"x={x} is even" in trial["error"]
            run = project.flow("status", trial["run_id"], "--json").json()
            assert run["status"] == "failed"
    assert done.json()["best"]["params"] == {"x": 1}
    none = project.flow(
        "sweep", "pipeline.py", "--space", "x=choice(2,4)", "--objective", "loss", "--name", "evens", "--trials", "2",
    )  # fmt: skip
    assert none.code == 1, str(none)
    assert "no trial completed" in none.err
    assert project.flow("sweep", "best", "evens", "--json").code == 1
    states = [t["state"] for t in project.flow("sweep", "status", "evens", "--json").json()["trials"]]
    assert states == ["failed", "failed"]


def test_the_median_pruner_stops_bad_trials_and_their_operators(project: Any) -> None:
    project.write("pipeline.py", DESCENT)
    done = project.flow(
        "sweep", "pipeline.py", "--space", "x=int(1,8)", "--sampler", "grid", "--seed", "0", "--trials", "8",
        "--parallel", "2", "--pruner", "median", "--objective", "loss", "-p", "steps=40", "--json",
    )  # fmt: skip
    assert done.code == 0, str(done)
    trials = done.json()["trials"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    complete = [t for t in trials if t["state"] == "complete"]
    assert pruned and len(pruned) + len(complete) == 8, trials
    for trial in complete:
        assert len(marks(project, f"steps-{trial['params']['x']}")) == 40
    counted = {t["params"]["x"]: len(marks(project, f"steps-{t['params']['x']}")) for t in pruned}
    for trial in pruned:
        assert counted[trial["params"]["x"]] < 30, counted  # its operator stopped, well before its end
        assert trial["value"] == float(trial["params"]["x"])  # Optuna keeps the last reported value
        assert project.flow("status", trial["run_id"], "--json").json()["status"] == "cancelled"
    best_complete = min(t["params"]["x"] for t in complete)
    assert all(t["params"]["x"] > best_complete for t in pruned)
    time.sleep(0.5)  # nothing left running: the pruned operators write no more steps
    assert counted == {t["params"]["x"]: len(marks(project, f"steps-{t['params']['x']}")) for t in pruned}
    # the web UI's sweep page reads the same trials from the study, pruned ones included
    from sqlalchemy import create_engine

    from scheduler.ui.sweeps import sweep_data

    shown = sweep_data(create_engine(f"sqlite:///{project.root / '.flow' / 'flow.db'}"), None, "descent")
    assert shown is not None
    assert {t.number: t.state for t in shown.trials} == {t["number"]: t["state"] for t in trials}
    assert shown.best is not None and shown.best.params == {"x": best_complete}


def test_a_killed_sweep_resumes_without_repeating_finished_trials(project: Any) -> None:
    project.write("pipeline.py", SLOW)
    process = subprocess.Popen(
        [FLOW, "sweep", "pipeline.py", "--space", "x=choice(1,2,3,4,5)", "--sampler", "grid", "--trials", "5",
         "--objective", "loss"],
        cwd=project.root, env=project.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = sweep_runs(project, "slow")
        fits = marks(project, "fit")
        mid_fit = sum(m.startswith("start") for m in fits) > sum(m.startswith("done") for m in fits)
        # killed while a fit is under way (not between its "done" and its commit, which a resume
        # would run again)
        if sum(r["status"] == "succeeded" for r in runs) >= 2 and mid_fit:
            break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the sweep did not get two trials done")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    before = {r["trial"]: (r["id"], r["status"]) for r in sweep_runs(project, "slow")}
    finished = {trial for trial, (_, status) in before.items() if status == "succeeded"}
    assert len(finished) >= 2
    done_before = [line for line in marks(project, "fit") if line.startswith("done")]

    resumed = project.flow("sweep", "resume", "slow", "--json")
    assert resumed.code == 0, str(resumed)
    trials = resumed.json()["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    assert all(t["state"] == "complete" for t in trials)
    assert sorted(t["params"]["x"] for t in trials) == [1, 2, 3, 4, 5]
    for trial in trials:
        if trial["number"] in finished:  # kept as they were: same run, not run again
            assert trial["run_id"] == before[trial["number"]][0]
    done_marks = [line for line in marks(project, "fit") if line.startswith("done")]
    assert sorted(done_marks) == sorted(set(done_marks)) and len(done_marks) == 5
    assert set(done_before) <= set(done_marks)
    assert marks(project, "prepare") == ["ran"]
    interrupted = [t for t, (_, status) in before.items() if status == "running"]
    after = sweep_runs(project, "slow")
    for trial in interrupted:  # resumed from its cached nodes: a new run linked to the killed one
        assert [r["resumed_from"] for r in after if r["trial"] == trial][-1] == before[trial][0]


def test_flowlib_sweep_in_python_and_no_optuna_on_import(project: Any) -> None:
    project.write("pipeline.py", QUADRATIC)
    done = project.python(
        """
        import json, sys
        import flowlib
        from flowlib.cli.main import cli
        assert "optuna" not in sys.modules and "scheduler" not in sys.modules
        import pipeline
        lines = []
        status = flowlib.sweep(pipeline.quadratic, space={"x": "float(2,4)", "k": [0, 1]}, objective="loss",
                               trials=3, seed=0, params={"n": 10}, progress=lines.append)
        print(json.dumps({"status": status, "lines": lines}))
        """
    )
    assert done.code == 0, str(done)
    found = json.loads(done.out)
    status = found["status"]
    assert [t["state"] for t in status["trials"]] == ["complete"] * 3
    assert status["best"]["value"] == min(t["value"] for t in status["trials"])
    assert any(line.startswith("trial 0 complete: loss=") for line in found["lines"])


def test_each_form_of_flow_sweep_shows_its_own_usage(project: Any) -> None:
    for args, usage in [
        (["sweep", "--help"], "Usage: flow sweep [OPTIONS] FILE [WORKFLOW]"),
        (["sweep", "status", "--help"], "Usage: flow sweep status [OPTIONS] NAME"),
        (["sweep", "best", "--help"], "Usage: flow sweep best [OPTIONS] NAME"),
        (["sweep", "resume", "--help"], "Usage: flow sweep resume [OPTIONS] NAME"),
    ]:
        done = subprocess.run(
            [FLOW, *args], capture_output=True, text=True, cwd=project.root, env=project.env
        )
        assert done.returncode == 0 and done.stdout.startswith(usage), done.stdout
    missing = subprocess.run(
        [FLOW, "sweep"], capture_output=True, text=True, cwd=project.root, env=project.env
    )
    assert (
        missing.returncode == 2
        and "Usage: flow sweep [OPTIONS] FILE [WORKFLOW]" in missing.stderr + missing.stdout
    )


@pytest.mark.postgres
def test_on_postgresql_the_study_has_its_own_schema(project: Any) -> None:
    import pg
    from sqlalchemy import create_engine, text

    project.write("pipeline.py", QUADRATIC)
    with pg.database() as url:
        done = project.flow(
            "sweep", "pipeline.py", "--space", "x=float(0,6)", "--objective", "loss", "--trials", "2", "--db", url,
            "--json",
        )  # fmt: skip
        assert done.code == 0, str(done)
        assert [t["state"] for t in done.json()["trials"]] == ["complete", "complete"]
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                tables = conn.execute(
                    text(
                        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version'"
                    )
                ).scalars()
                assert sorted(tables) == ["optuna", "public"]
        finally:
            engine.dispose()
