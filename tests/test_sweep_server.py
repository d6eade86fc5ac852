"""`flow sweep --server`: a sweep whose trials are runs on a real `flow server` pool and whose
study the server keeps (SQLite and PostgreSQL), driven through the CLI and HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pg
import pytest
from conftest import FLOW
from e2e import make_project
from server import start_server, wait_for
from test_sweep import QUADRATIC

pytestmark = pytest.mark.slow

PIPELINE = (
    QUADRATIC  # with the operators below: slower steps, so that a pool's pruning is seen
    + """
@operator
def descend(data: list[float], x: int, steps: int) -> dict[str, float]:
    for step in range(steps):
        mark(f"steps-{x}", str(step))
        current.log_metric("loss", float(x), step=step)
        time.sleep(0.25)
    return {"loss": float(x)}

@workflow
def descent(x: int = 1, steps: int = 20) -> dict[str, float]:
    return descend(prepare(10), x, steps)

@operator
def slow_fit(data: list[float], x: int) -> dict[str, float]:
    mark("fit", f"start {x}")
    time.sleep(1.5)
    mark("fit", f"done {x}")
    return {"loss": float(x)}

@workflow
def slow(x: int = 1) -> dict[str, float]:
    return slow_fit(prepare(10), x)
"""
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def project(request, tmp_path):  # type: ignore[no-untyped-def]
    made = make_project(tmp_path / "proj")
    made.write("p.py", PIPELINE)
    made.extra_env = {"MARKS": str(made.root / "marks")}
    if request.param == "postgresql":
        with pg.database() as url:
            made.extra_env["FLOW_DB_URL"] = url
            yield made
    else:
        yield made


@pytest.fixture
def server(project):  # type: ignore[no-untyped-def]
    started = start_server(project, env=project.extra_env)
    yield started
    started.kill()


def flow(project, *args: str, server=None, token: str | None = None, timeout: float = 180):  # type: ignore[no-untyped-def]
    env = dict(project.extra_env)
    if server is not None:
        env["FLOW_SERVER"] = server.url  # as a team exports it: `flow sweep` goes to the server
    if token is not None:
        env["FLOW_TOKEN"] = token
    return project.flow(*args, env=env, timeout=timeout)


def token(project, name: str, *extra: str) -> str:  # type: ignore[no-untyped-def]
    done = flow(project, "token", "create", name, *extra)
    assert done.code == 0, done
    return done.out.strip()


def test_a_sweep_on_the_pool_keeps_its_study_on_the_server(project, server) -> None:  # type: ignore[no-untyped-def]
    alice, bob = token(project, "alice"), token(project, "bob")
    done = flow(
        project, "sweep", "p.py", "quadratic", "--space", "x=float(0,5)", "--space", "k=choice(0,1)",
        "--objective", "loss", "--trials", "5", "--parallel", "2", "--seed", "3", "--name", "tune", "--json",
        server=server, token=alice,
    )  # fmt: skip
    assert done.code == 0, done
    status = done.json()
    trials = status["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4] and {t["state"] for t in trials} == {"complete"}
    for trial in trials:  # each value is the objective of its parameters, typed by the annotations
        assert isinstance(trial["params"]["k"], int) and isinstance(trial["params"]["x"], float)
        assert trial["value"] == pytest.approx((trial["params"]["x"] - 3.0) ** 2 + trial["params"]["k"])
    best = min(trials, key=lambda t: t["value"])
    assert status["best"]["trial"] == best["number"] and status["best"]["value"] == best["value"]
    assert project.marks("prepare") == ["ran"]  # the data step ran once, on the pool, for all five
    assert len(project.marks("score")) == 5

    code, runs = server.request("GET", "/api/runs?sweep=tune&limit=100", token=alice)
    assert code == 200 and sorted(r["trial"] for r in runs) == [0, 1, 2, 3, 4], runs
    assert {(r["status"], r["user"]) for r in runs} == {("succeeded", "alice")}
    assert {t["run_id"] for t in trials} == {r["run_id"] for r in runs}
    # read back through the server, as `flow sweep status` and the API give it
    shown = flow(project, "sweep", "status", "tune", "--json", server=server, token=bob).json()
    assert shown == server.request("GET", "/api/sweeps/tune", token=bob)[1] == status
    assert flow(project, "sweep", "best", "tune", "--json", server=server, token=bob).json() == status["best"]

    # only its owner drives it; unknown sweeps and trials, and ended trials, are 4xx
    assert server.request("POST", "/api/sweeps/tune/trials", token=bob)[0] == 403
    assert server.request("POST", "/api/sweeps/nothing/trials", token=alice)[0] == 404
    code, answer = server.request(
        "POST", "/api/sweeps/tune/trials/0/outcome", {"state": "pruned"}, token=alice
    )
    assert code == 409 and "already ended" in answer["error"], answer
    assert (
        server.request("POST", "/api/sweeps/tune/trials/99/steps", {"points": [[0, 1.0]]}, token=alice)[0]
        == 404
    )
    malformed = {
        "name": "broken", "workflow": "quadratic", "file": "p.py", "objective": "loss",
        "space": {"x": "float(0,5)"}, "distributions": {"x": "{not json"},
    }  # fmt: skip
    code, answer = server.request("POST", "/api/sweeps", malformed, token=alice)
    assert code == 409 and "distribution of 'x'" in answer["error"], answer
    x = shown_distribution(server, alice)
    for extra, expected in (
        ({"grid": {"y": []}}, "grid: give a non-empty list"),  # a grid is checked whatever the sampler
        ({"sampler": "grid", "grid": {"x": ["a"]}}, "'a' is not a value of parameter 'x'"),
        ({"file": "/etc/passwd"}, "relative to the project's root"),
        ({"file": "../p.py"}, "relative to the project's root"),
    ):
        code, answer = server.request(
            "POST", "/api/sweeps", {**malformed, "distributions": x, **extra}, token=alice
        )
        assert code == 409 and expected in answer["error"], (extra, answer)
    code, answer = server.request(
        "POST", "/api/sweeps/tune/trials/9/steps", {"points": [[2**63, 1.0]]}, token=alice
    )
    assert code == 422, answer
    code, listed = server.request("GET", "/api/sweeps", token=alice)
    assert [s["name"] for s in listed] == ["tune"]
    # the same sweep again continues it (its owner), a different space is refused before anything runs
    again = flow(
        project, "sweep", "p.py", "quadratic", "--space", "x=float(0,5)", "--space", "k=choice(0,1)",
        "--objective", "loss", "--trials", "6", "--name", "tune", "--json", server=server, token=alice,
    )  # fmt: skip
    assert again.code == 0 and len(again.json()["trials"]) == 6, again
    other = flow(
        project, "sweep", "p.py", "quadratic", "--space", "x=float(0,1)", "--objective", "loss",
        "--name", "tune", server=server, token=alice,
    )  # fmt: skip
    assert other.code == 2 and "exists with another space" in other.err, other
    assert len(project.marks("score")) == 6


def shown_distribution(server, token_: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The distributions of sweep `tune`, as its record keeps them (a valid one to send again)."""
    code, record = server.request("GET", "/api/sweeps/tune/record", token=token_)
    assert code == 200, record
    return {"x": record["settings"]["distributions"]["x"]}


def test_pruned_trials_on_the_pool_stop_and_a_killed_sweep_resumes(project, server) -> None:  # type: ignore[no-untyped-def]
    admin = token(project, "root", "--admin")
    pruned_sweep = flow(
        project, "sweep", "p.py", "descent", "--space", "x=int(1,7)", "--sampler", "grid", "--seed", "0",
        "--trials", "7", "--parallel", "2", "--pruner", "median", "--objective", "loss", "-p", "steps=12",
        "--json", server=server, token=admin,
    )  # fmt: skip
    assert pruned_sweep.code == 0, pruned_sweep
    trials = pruned_sweep.json()["trials"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    complete = [t for t in trials if t["state"] == "complete"]
    assert pruned and len(pruned) + len(complete) == 7, trials
    for trial in complete:
        assert len(project.marks(f"steps-{trial['params']['x']}")) == 12
    counted = {t["params"]["x"]: len(project.marks(f"steps-{t['params']['x']}")) for t in pruned}
    for trial in pruned:  # its run is cancelled on the pool (unless it ended before the pruner spoke)
        shown = flow(project, "status", trial["run_id"], "--json", server=server, token=admin).json()
        assert shown["status"] in ("cancelled", "succeeded"), shown
        assert shown["status"] == "cancelled" or counted[trial["params"]["x"]] == 12
    assert any(n < 12 for n in counted.values()), counted  # an operator stopped before its end
    assert all(t["params"]["x"] > min(c["params"]["x"] for c in complete) for t in pruned)
    time.sleep(0.6)  # and stopped: no more steps
    assert counted == {t["params"]["x"]: len(project.marks(f"steps-{t['params']['x']}")) for t in pruned}

    # a sweep whose `flow sweep` process is killed: its trials' runs go on on the pool, and
    # `flow sweep resume --server` follows them again, then runs the rest
    env = {**project.env, **project.extra_env, "FLOW_SERVER": server.url, "FLOW_TOKEN": admin}
    process = subprocess.Popen(
        [FLOW, "sweep", "p.py", "slow", "--space", "x=choice(1,2,3,4)", "--sampler", "grid", "--trials", "4",
         "--objective", "loss"],
        cwd=project.root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    started = wait_for(
        lambda: len(project.marks("fit")) >= 2 and project.marks("fit")[-1].startswith("start")
    )
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert started, project.marks("fit")
    resumed = flow(project, "sweep", "resume", "slow", "--json", server=server, token=admin)
    assert resumed.code == 0, resumed
    trials = resumed.json()["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 4, trials
    assert sorted(t["params"]["x"] for t in trials) == [1, 2, 3, 4]
    done_marks = [line for line in project.marks("fit") if line.startswith("done")]
    assert sorted(done_marks) == ["done 1", "done 2", "done 3", "done 4"]  # none ran twice
    code, runs = server.request("GET", "/api/runs?sweep=slow&limit=100", token=admin)
    assert code == 200 and sorted(r["trial"] for r in runs) == [0, 1, 2, 3], runs  # followed, not rerun


def test_sweep_server_flags_and_errors(project, server) -> None:  # type: ignore[no-untyped-def]
    gone = flow(
        project, "sweep", "p.py", "quadratic", "--space", "x=float(0,1)", "--objective", "loss",
        "--server", "http://127.0.0.1:9",
    )  # fmt: skip
    assert gone.code == 2 and "cannot reach the server at http://127.0.0.1:9" in gone.err, gone
    bad = flow(
        project,
        "sweep",
        "p.py",
        "quadratic",
        "--space",
        "depth=int(1,3)",
        "--objective",
        "loss",
        server=server,
    )
    assert bad.code == 2 and "has no parameter 'depth'" in bad.err, bad
    refused = flow(project, "sweep", "status", "quadratic", server=server)
    assert refused.code == 2 and "401" in refused.err, refused
    assert server.request("GET", "/api/sweeps", token=None)[0] == 401
    admin = token(project, "root", "--admin")
    assert server.request("GET", "/api/sweeps", token=admin)[1] == []  # the refused ones recorded nothing
    assert project.marks("prepare") == []
