"""The scheduler service, end to end: real `flow server` processes over one database (SQLite and
PostgreSQL), driven through the CLI and HTTP as a team would."""

from __future__ import annotations

import json
import time

import pg
import pytest
from e2e import MARK, make_project
from server import start_server, wait_for

SLOW = (
    MARK
    + """
import os, time
from flowlib import current, operator, workflow

@operator
def step(i: int, seconds: float) -> int:
    mark("step", str(i))
    current.log_metric("i", i)
    time.sleep(seconds)
    return i

@operator
def total(xs: list[int]) -> int:
    mark("total")
    return sum(xs)

@workflow
def w(n: int = 3, seconds: float = 0.0, tag: str = "") -> int:
    return total(step.map(list(range(n)), seconds=seconds))
"""
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def project(request, tmp_path):  # type: ignore[no-untyped-def]
    made = make_project(tmp_path / "proj")
    made.write("p.py", SLOW)
    if request.param == "postgresql":
        with pg.database() as url:
            made.extra_env = {"FLOW_DB_URL": url}
            yield made
    else:
        made.extra_env = {}
        yield made


@pytest.fixture
def servers(project):  # type: ignore[no-untyped-def]
    started = []

    def start(*args: str, token: str | None = None):  # type: ignore[no-untyped-def]
        server = start_server(
            project, *args, env=project.extra_env, token=token, name=f"server{len(started)}"
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def flow(project, *args: str, server=None, token: str | None = None, timeout: float = 120):  # type: ignore[no-untyped-def]
    env = dict(project.extra_env)
    if server is not None:
        env["FLOW_SERVER"] = server.url
    if token is not None:
        env["FLOW_TOKEN"] = token
    return project.flow(*args, env=env, timeout=timeout)


def admin_token(project) -> str:  # type: ignore[no-untyped-def]
    done = flow(project, "token", "create", "admin", "--admin")
    assert done.code == 0, done
    return done.out.strip()


def test_submit_and_wait_runs_the_snapshot_it_sent(project, servers) -> None:  # type: ignore[no-untyped-def]
    server = servers("--no-auth", "--max-runs", "1")
    # a long run holds the only slot, so the next one waits in the queue while its file is edited
    busy = flow(project, "submit", "p.py", "-p", "seconds=2.0", "-p", "n=1", "-p", "tag=busy", server=server)
    assert busy.code == 0, busy
    queued = flow(project, "submit", "p.py", "-p", "n=4", "--json", server=server)
    assert queued.code == 0 and queued.json()["status"] == "queued", queued
    project.write("p.py", SLOW.replace("return sum(xs)", "return -1"))  # after submit: changes nothing
    run_id = queued.json()["run_id"]
    done = flow(project, "status", run_id, "--json", server=server)
    assert done.code == 0
    assert wait_for(
        lambda: flow(project, "status", run_id, "--json", server=server).json()["status"] == "succeeded"
    )
    assert flow(project, "outputs", run_id, "--json", server=server).json() == 6
    waited = flow(project, "submit", "p.py", "-p", "n=2", "--wait", "--json", server=server)
    assert waited.code == 0 and waited.json()["outputs"] == -1  # the edited code, submitted anew


def test_every_reading_command_answers_the_same_through_the_server(project, servers) -> None:  # type: ignore[no-untyped-def]
    server = servers("--no-auth")
    done = flow(project, "run", "p.py", "--server", server.url, "--json")
    assert done.code == 0 and done.json()["outputs"] == 3, done
    run_id = done.json()["run_id"]
    for command in (
        ["runs", "--json"],
        ["status", run_id, "--json"],
        ["status", run_id],
        ["logs", run_id, "total"],
        ["metrics", run_id, "--json"],
        ["why", run_id, "step[1]", "--json"],
        ["outputs", run_id, "--json"],
        ["outputs", run_id, "total", "--path"],
        ["resume", run_id, "--dry-run", "--json"],
        ["resume", run_id, "--dry-run"],
    ):
        local, remote = flow(project, *command), flow(project, *command, server=server)
        assert local.code == remote.code == 0, (local, remote)
        assert local.out == remote.out, (command, local.out, remote.out)
    assert len(flow(project, "runs", "--json").json()) == 1  # a dry run records nothing, here or there


def test_tokens_owners_and_admins(project, servers) -> None:  # type: ignore[no-untyped-def]
    admin = admin_token(project)
    alice = flow(project, "token", "create", "alice").out.strip()
    bob = flow(project, "token", "create", "bob").out.strip()
    server = servers()
    refused = flow(project, "runs", server=server)
    assert refused.code == 2 and "401" in refused.err and "Traceback" not in refused.err, refused
    assert flow(project, "runs", server=server, token="flow_wrong").code == 2
    status, body = server.request("GET", "/api/runs", token=None)
    assert status == 401 and "error" in body
    assert server.request("GET", "/api/health", token=None)[0] == 200
    assert server.request("GET", "/openapi.json", token=None)[0] == 200
    run = flow(
        project, "submit", "p.py", "-p", "seconds=30", "-p", "n=1", "--json", server=server, token=alice
    ).json()
    assert run["user"] == "alice"
    denied = flow(project, "cancel", run["run_id"], server=server, token=bob)
    assert denied.code == 2 and "403" in denied.err and "alice" in denied.err, denied
    assert flow(project, "cancel", run["run_id"], server=server, token=admin).code == 0
    assert wait_for(
        lambda: (
            flow(project, "status", run["run_id"], "--json", server=server, token=bob).json()["status"]
            == "cancelled"
        )
    )
    assert flow(project, "token", "revoke", "alice").code == 0
    assert flow(project, "runs", server=server, token=alice).code == 2


def test_a_malformed_request_is_a_4xx_with_nothing_recorded(project, servers) -> None:  # type: ignore[no-untyped-def]
    server = servers("--no-auth")
    for body in (
        {},
        {"plan": {"version": 99}, "snapshot": "a" * 64},
        {"plan": {}, "snapshot": "nope"},
        [1, 2],
    ):
        status, answer = server.request("POST", "/api/runs", body)
        assert 400 <= status < 500 and "error" in answer, (body, status, answer)
    status, answer = server.request("POST", "/api/runs", raw=b"{not json")
    assert 400 <= status < 500, (status, answer)
    status, answer = server.request("PUT", "/api/snapshots/" + "0" * 64, raw=b"not the bytes of that digest")
    assert status == 400 and "error" in answer
    assert flow(project, "runs", "--json", server=server).json() == []


def test_queued_runs_go_by_priority_and_a_queued_cancel_runs_nothing(project, servers) -> None:  # type: ignore[no-untyped-def]
    server = servers("--no-auth", "--max-runs", "1")
    # the first run holds the one slot until the test cancels it: the queue is built while it runs
    first = flow(
        project, "submit", "p.py", "-p", "n=1", "-p", "seconds=300", "-p", "tag=first", server=server
    ).out.strip()
    low = flow(
        project, "submit", "p.py", "-p", "n=1", "-p", "tag=low", "--priority", "1", server=server
    ).out.strip()
    doomed = flow(
        project, "submit", "p.py", "-p", "n=1", "-p", "tag=doomed", "--priority", "5", server=server
    ).out.strip()
    high = flow(
        project, "submit", "p.py", "-p", "n=1", "-p", "tag=high", "--priority", "9", server=server
    ).out.strip()
    cancelled = flow(project, "cancel", doomed, server=server)
    assert cancelled.code == 0 and "never started" in cancelled.err, cancelled
    assert wait_for(
        lambda: flow(project, "status", first, "--json", server=server).json()["status"] == "running"
    )
    assert flow(project, "cancel", first, server=server).code == 0
    assert wait_for(
        lambda: flow(project, "status", low, "--json", server=server).json()["status"] == "succeeded"
    )
    started = {
        run: flow(project, "status", run, "--json", server=server).json() for run in (high, low, doomed)
    }
    assert started[doomed]["status"] == "cancelled" and started[doomed]["nodes"][0]["attempts"] == 0
    runs = {r["run_id"]: r for r in flow(project, "runs", "--json", "--limit", "10", server=server).json()}
    assert runs[high]["started_at"] < runs[low]["started_at"]


def test_a_killed_server_is_adopted_by_another_and_nothing_that_succeeded_runs_twice(
    project, servers
) -> None:  # type: ignore[no-untyped-def]
    project.write("flow.toml", "[server]\nlease_seconds = 3\n")
    first = servers("--no-auth")
    run = flow(project, "submit", "p.py", "-p", "n=6", "-p", "seconds=1.0", server=first).out.strip()
    assert wait_for(lambda: len(project.marks("step")) >= 4)  # two finished a second ago: committed
    time.sleep(0.5)
    first.kill()
    killed = flow(project, "status", run, "--json").json()  # from the database: what was committed
    succeeded = {n["name"] for n in killed["nodes"] if n["status"] == "succeeded"}
    assert succeeded, killed
    second = servers("--no-auth")
    assert wait_for(
        lambda: flow(project, "status", run, "--json", server=second).json()["status"] == "succeeded",
        timeout=120,
    )
    assert flow(project, "outputs", run, "--json", server=second).json() == 15
    runs = {line.split()[0] for line in project.marks("step")}
    counts = {i: sum(1 for line in project.marks("step") if line.split()[0] == i) for i in runs}
    assert runs == {str(i) for i in range(6)}
    for name in succeeded:  # committed before the kill: never run again
        assert counts[name.removeprefix("step[").removesuffix("]")] == 1, (name, counts)
    assert all(count <= 2 for count in counts.values()), counts  # one running at the kill may run again


def test_a_pipeline_whose_import_calls_os_exit_fails_its_run_not_the_server(project, servers) -> None:  # type: ignore[no-untyped-def]
    # the module exits when imported from a server's copy of it (its snapshot), not from here
    project.write(
        "p.py",
        "import os\nif 'snapshots' in os.path.abspath(__file__).split(os.sep):\n    os._exit(3)\n" + SLOW,
    )
    server = servers("--no-auth")
    assert flow(project, "deploy", "p.py", "--name", "poisoned", server=server).out.strip() == "1"
    launched = flow(project, "launch", "poisoned", "--wait", "--json", server=server)
    assert launched.code == 1 and launched.json()["status"] == "failed", launched
    assert "failed to load" in launched.json()["error"] and "code 3" in launched.json()["error"]
    submitted = flow(
        project, "submit", "p.py", "--wait", "--json", server=server
    )  # compiled here; its workers import it there
    assert submitted.code == 1 and submitted.json()["status"] == "failed", submitted
    assert {n["error"]["type"] for n in submitted.json()["nodes"] if n["status"] == "failed"} == {
        "WorkerDied"
    }
    assert server.request("GET", "/api/health")[0] == 200 and server.process.poll() is None
    assert flow(project, "submit", "p.py", "--json", server=server).code == 0  # it still takes work


def test_sigterm_drains_running_runs_then_exits_zero(project, servers) -> None:  # type: ignore[no-untyped-def]
    server = servers("--no-auth")
    run = flow(project, "submit", "p.py", "-p", "n=1", "-p", "seconds=2", server=server).out.strip()
    assert wait_for(lambda: project.marks("step"))
    assert server.terminate() == 0
    assert "draining" in server.output()
    assert flow(project, "status", run, "--json").json()["status"] == "succeeded"


def test_the_api_lists_sweeps_and_gives_one_as_flow_sweep_status_does(project, servers) -> None:  # type: ignore[no-untyped-def]
    swept = flow(
        project, "sweep", "p.py", "--space", "seconds=float(0,0.01)", "--objective", "total_seconds",
        "--trials", "2", "--name", "quick",
    )  # fmt: skip
    assert swept.code == 1, swept  # no output field or metric of that name: every trial fails
    status = flow(project, "sweep", "status", "quick", "--json").json()
    server = servers("--no-auth")
    code, listed = server.request("GET", "/api/sweeps")
    assert code == 200 and [s["name"] for s in listed] == ["quick"], listed
    assert listed[0]["objective"] == "total_seconds" and listed[0]["workflow"] == "w"
    code, shown = server.request("GET", "/api/sweeps/quick")
    assert code == 200 and shown == status, (shown, status)
    assert [t["state"] for t in shown["trials"]] == ["failed", "failed"]
    code, missing = server.request("GET", "/api/sweeps/nothing")
    assert code == 404 and "no sweep named 'nothing'" in missing["error"]


def test_no_auth_is_refused_off_loopback(project) -> None:  # type: ignore[no-untyped-def]
    done = flow(project, "server", "--host", "0.0.0.0", "--no-auth", "--port", "0")
    assert done.code == 2 and "--no-auth is refused" in done.err, done


def test_a_port_in_use_is_exit_2_before_anything_starts(project, servers) -> None:  # type: ignore[no-untyped-def]
    server = servers("--no-auth")
    port = server.url.rsplit(":", 1)[1]
    done = flow(project, "server", "--no-auth", "--port", port, timeout=60)
    assert done.code == 2 and done.err.startswith("error: cannot listen on"), done
    assert len(done.err.strip().splitlines()) == 1 and "listening" not in done.err, done
    assert server.request("GET", "/api/health")[0] == 200  # the first one is untouched


def _ended(server, run_id: str) -> dict | None:  # type: ignore[no-untyped-def]
    run = server.request("GET", f"/api/runs/{run_id}")[1]
    return run if run["status"] not in ("queued", "running") else None


def test_deployments_version_launch_with_typed_parameters_and_delete(project, servers) -> None:  # type: ignore[no-untyped-def]
    server = servers("--no-auth")
    assert flow(project, "deploy", "p.py", "--name", "nightly", "-p", "n=2", server=server).out.strip() == "1"
    assert flow(project, "deploy", "p.py", "--name", "nightly", "-p", "n=2", server=server).out.strip() == "2"
    listed = flow(project, "deployments", "--json", server=server).json()
    assert listed == [
        {
            **listed[0],
            "name": "nightly",
            "version": 2,
            "workflow": "w",
            "schedule": None,
        }
    ]
    assert [p["name"] for p in listed[0]["params"]] == ["n", "seconds", "tag"]
    # what a launch without -p n uses: the value fixed at deploy, not the workflow's default 3
    assert listed[0]["params"][0] == {"name": "n", "type": "int", "default": 2, "required": False}
    assert listed[0]["params"][1] == {"name": "seconds", "type": "float", "default": 0.0, "required": False}
    bad = flow(project, "launch", "nightly", "-p", "n=many", server=server)
    assert bad.code == 2 and "parameter 'n'" in bad.err, bad
    done = flow(project, "launch", "nightly", "--wait", "--json", server=server)
    assert done.code == 0 and done.json()["outputs"] == 1, done  # n=2 fixed at deploy: 0 + 1
    runs = flow(project, "runs", "--json", server=server).json()
    assert runs[0]["deployment"] == "nightly" and runs[0]["deployment_version"] == 2
    # over HTTP a parameter may be a JSON value as a params file gives it, or the text -p gives
    code, typed = server.request(
        "POST", "/api/deployments/nightly/launch", {"params": {"n": 4, "seconds": 0}}
    )
    assert code == 201, typed
    as_text = server.request("POST", "/api/deployments/nightly/launch", {"params": {"n": "5"}})[1]
    for run_id, expected in ((typed["run_id"], 6), (as_text["run_id"], 10)):
        ended = wait_for(lambda run_id=run_id: _ended(server, run_id))
        assert ended and ended["status"] == "succeeded", ended
        assert flow(project, "outputs", run_id, "--json", server=server).json() == expected
    for wrong in ({"n": [1]}, {"n": 1.5}, {"n": "x"}, {"nn": 1}):
        code, problem = server.request("POST", "/api/deployments/nightly/launch", {"params": wrong})
        assert code == 400 and "parameter" in problem["error"], (wrong, code, problem)
    unknown = flow(project, "launch", "nope", server=server)
    assert unknown.code == 2 and "no deployment named 'nope'" in unknown.err
    assert flow(project, "deploy", "--delete", "nightly", server=server).code == 0
    assert flow(project, "deployments", "--json", server=server).json() == []
    assert flow(project, "deploy", "--delete", "nightly", server=server).code == 2
    bad_cron = flow(project, "deploy", "p.py", "--schedule", "every day", server=server)
    assert bad_cron.code == 2 and "cron" in bad_cron.err


@pytest.mark.slow
def test_a_schedule_fires_once_per_due_time_with_two_servers_up(project, servers) -> None:  # type: ignore[no-untyped-def]
    one, two = servers("--no-auth"), servers("--no-auth")
    assert (
        flow(
            project, "deploy", "p.py", "--name", "tick", "--schedule", "* * * * *", "-p", "n=1", server=one
        ).code
        == 0
    )
    now = time.time()
    next_minute = (int(now) // 60 + 1) * 60
    assert wait_for(
        lambda: flow(project, "runs", "--json", server=two).json(), timeout=next_minute - now + 30
    )
    time.sleep(5)  # both servers had time to see the tick
    runs = flow(project, "runs", "--json", server=two).json()
    assert len(runs) == 1 and runs[0]["deployment"] == "tick", runs
    assert wait_for(
        lambda: (
            flow(project, "status", runs[0]["run_id"], "--json", server=one).json()["status"] == "succeeded"
        )
    )
    assert json.dumps(runs)
