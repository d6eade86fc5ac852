"""The `ssh` executor against a real OpenSSH daemon on 127.0.0.1 (see tests/sshd.py)."""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sshd
from e2e import SLOW_START, TRACEBACK

pytest.importorskip("asyncssh")
if sshd.missing():
    pytest.skip(sshd.missing() or "", allow_module_level=True)

from executors.base import OperatorRef, TaskSpec
from executors.ssh import SshExecutor

PIPELINE = """
import os
from typing import NamedTuple
from flowlib import current, operator, workflow

class Split(NamedTuple):
    train: list[int]
    test: list[int]

@operator
def numbers(n: int) -> list[int]:
    print(f"numbers made {n}")
    return list(range(n))

@operator
def split(xs: list[int], frac: float = 0.5) -> Split:
    k = int(len(xs) * frac)
    return Split(xs[:k], xs[k:])

@operator
def square(x: int) -> int:
    current.log_metric("x", x)
    return x * x

@operator
def blob(n: int) -> str:
    return "x" * n  # bigger than what travels inline: goes through the artifact store both ways

@operator
def summary(squares: list[int], rest: Split, text: str) -> dict:
    print("summary ran", "over ssh" if "SSH_CONNECTION" in os.environ else "locally")
    return {"squares": squares, "test": rest.test, "chars": len(text)}

@workflow
def demo(n: int = 6) -> dict:
    s = split(numbers(n))
    return summary(square.map(s.train), s, blob(100_000))
"""

MIXED = """
import os
from flowlib import operator, workflow

@operator
def prep(n: int) -> list[int]:
    return [n, int("SSH_CONNECTION" in os.environ)]

@operator(executor="ssh")
def train(xs: list[int]) -> list[int]:
    return xs + [int("SSH_CONNECTION" in os.environ)]

@workflow
def mixed(n: int = 3) -> list[int]:
    return train(prep(n))
"""

TRAIN = """
import os, pathlib
from flowlib import current, operator, workflow

CRASH = pathlib.Path(CRASH_FILE)

@operator(retries=1, retry_delay=0)
def train(epochs: int) -> int:
    state = current.checkpoint.load() or {"epoch": 0, "loss": 100}
    for epoch in range(state["epoch"], epochs):
        print(f"epoch {epoch} attempt {current.attempt}")
        state = {"epoch": epoch + 1, "loss": state["loss"] // 2}
        current.checkpoint.save(state, step=epoch)
        if epoch == 2 and CRASH.exists():
            CRASH.unlink()
            os._exit(1)
    return state["loss"]

@workflow
def training(epochs: int = 5) -> int:
    return train(epochs)
"""

OPS = """
import os, time
from flowlib import operator

@operator
def hello(name: str) -> str:
    print("hello", name)
    return f"hello {name}"

@operator
def sleeper(pidfile: str, seconds: float) -> int:
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(seconds)
    return 1
"""


@pytest.fixture
def daemon(sshd_host: sshd.Sshd) -> sshd.Sshd:
    """The session's sshd (tests/conftest.py), shared with the conformance suite."""
    return sshd_host


def settings(
    daemon: sshd.Sshd, workdir: Path, hosts: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    # The "host" is this machine: its interpreter is the one with flowlib installed.
    return {
        "hosts": hosts or [daemon.host],
        "identity_file": str(daemon.identity_file),
        "known_hosts": str(daemon.known_hosts),
        "python": sys.executable,
        "workdir": str(workdir),
        **extra,
    }


def write_config(project: Any, daemon: sshd.Sshd, **overrides: Any) -> None:
    values = settings(daemon, project.root.parent / "remote", **overrides)
    lines = ["[executors.ssh]"] + [f"{key} = {value!r}" for key, value in values.items()]
    (project.root / "flow.toml").write_text("\n".join(lines).replace("'", '"') + "\n")


def gone(pid: int, within: float = 5.0) -> bool:
    import psutil

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def wait_for(path: Path, within: float = 20.0) -> int:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return int(path.read_text())


# -- end to end: `flow run --executor ssh` ---------------------------------------------------------


def test_a_timeout_counts_from_the_remote_operators_start(project: Any, daemon: sshd.Sshd) -> None:
    project.write("slow.py", SLOW_START)
    write_config(project, daemon)
    done = project.flow("run", "slow.py", "--executor", "ssh", "--json")
    assert done.code == 0, str(done)  # was: "timed out after 1 s" while the remote worker started
    assert done.json()["outputs"] == [0, 1]


def test_dag_runs_over_ssh_with_the_same_outputs_as_local(project: Any, daemon: sshd.Sshd) -> None:
    project.write("pipe.py", PIPELINE)
    write_config(project, daemon)
    done = project.flow("run", "pipe.py", "--executor", "ssh", "--json")
    assert done.code == 0, str(done)
    result = done.json()
    assert result["outputs"] == {"squares": [0, 1, 4], "test": [3, 4, 5], "chars": 100_000}
    assert {n["status"] for n in result["nodes"]} == {"succeeded"}

    logs = project.flow("logs", result["run_id"])
    assert logs.code == 0, str(logs)
    assert "numbers made 6" in logs.out and "summary ran over ssh" in logs.out
    metrics = project.flow("metrics", result["run_id"], "--json").json()  # events came back too
    assert sorted((m["node"], m["value"]) for m in metrics) == [
        ("square[0]", 0),
        ("square[1]", 1),
        ("square[2]", 2),
    ]

    local = project.flow("run", "pipe.py", "--executor", "local", "--no-cache", "--json")
    assert local.code == 0, str(local)
    assert local.json()["outputs"] == result["outputs"]

    # Every node is cached now: a second run must not need the host (here: a dead one).
    write_config(project, daemon, hosts=[f"127.0.0.1:{sshd.closed_port()}"])
    again = project.flow("run", "pipe.py", "--executor", "ssh", "--json")
    assert again.code == 0, str(again)
    assert {n["status"] for n in again.json()["nodes"]} == {"cached"}


def test_a_dead_host_in_the_list_is_skipped(project: Any, daemon: sshd.Sshd) -> None:
    project.write("pipe.py", PIPELINE)
    dead = f"127.0.0.1:{sshd.closed_port()}"
    write_config(project, daemon, hosts=[dead, daemon.host])
    done = project.flow("run", "pipe.py", "--executor", "ssh", "-p", "n=4", "--json")
    assert done.code == 0, str(done)
    assert done.json()["outputs"] == {"squares": [0, 1], "test": [2, 3], "chars": 100_000}
    assert f"ssh host {dead} cannot be reached" in done.err
    assert not re.search(TRACEBACK, done.err, re.MULTILINE), str(done)


def test_a_host_key_mismatch_is_refused(project: Any, daemon: sshd.Sshd, tmp_path: Path) -> None:
    project.write("pipe.py", PIPELINE)
    sshd.keygen(tmp_path / "impostor", "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line(daemon.port, tmp_path / "impostor.pub"))
    write_config(project, daemon, known_hosts=str(known_hosts))
    done = project.flow("run", "pipe.py", "--executor", "ssh", "--json")
    assert done.code == 1, str(done)
    assert not re.search(TRACEBACK, done.err, re.MULTILINE), str(done)
    failed = [n for n in done.json()["nodes"] if n["status"] == "failed"]
    assert sorted(n["name"] for n in failed) == ["blob", "numbers"], str(done)  # the two roots
    for node in failed:
        message = node["error"]["message"]
        assert f"ssh host {daemon.host}" in message and str(known_hosts) in message
        assert "host key" in message and "\n" not in message


def test_per_operator_executor_mixes_local_and_ssh(project: Any, daemon: sshd.Sshd) -> None:
    project.write("mixed.py", MIXED)
    write_config(project, daemon)
    done = project.flow("run", "mixed.py", "--json")
    assert done.code == 0, str(done)
    assert done.json()["outputs"] == [3, 0, 1]  # prep ran locally, train over ssh


def test_checkpoints_travel_both_ways(project: Any, daemon: sshd.Sshd) -> None:
    crash = project.root / "crash-once"
    crash.write_text("")
    project.write("train.py", TRAIN.replace("CRASH_FILE", repr(str(crash))))
    write_config(project, daemon)
    done = project.flow("run", "train.py", "--executor", "ssh", "--json")
    assert done.code == 0, str(done)
    assert done.json()["outputs"] == 100 // 2**5 and done.json()["nodes"][0]["attempts"] == 2
    logs = project.flow("logs", done.json()["run_id"]).out
    # The retry started from the checkpoint the crashed attempt saved (fetched back, then shipped again).
    assert "epoch 3 attempt 2" in logs and "epoch 0 attempt 2" not in logs


# -- the executor on its own (what every executor does is in test_executor_conformance.py) ---------


@pytest.fixture
def ops(tmp_path: Path) -> Path:
    (tmp_path / "code").mkdir()
    path = tmp_path / "code" / "ssh_ops.py"
    path.write_text(OPS)
    return path


def spec(ops: Path, qualname: str, timeout: float | None = None, **inputs: Any) -> TaskSpec:
    return TaskSpec(
        task_id=uuid.uuid4().hex,
        run_id="r1",
        node=qualname,
        attempt=1,
        operator=OperatorRef(str(ops), "ssh_ops", qualname),
        inputs={name: {"literal": value} for name, value in inputs.items()},
        timeout=timeout,
        store_url=str(ops.parent.parent / "store"),
        fsync=False,
        project_root=str(ops.parent),
    )


def test_a_dropped_connection_fails_the_attempt_and_the_retry_goes_elsewhere(
    daemon: sshd.Sshd, ops: Path
) -> None:
    first, second = daemon.host, f"localhost:{daemon.port}"  # one daemon under two names
    executor = SshExecutor()
    executor.start(settings(daemon, ops.parent.parent / "remote", hosts=[first, second]))
    try:
        pidfile = ops.parent / "drop.pid"
        future = executor.submit(spec(ops, "sleeper", pidfile=str(pidfile), seconds=60), lambda event: None)
        pid = wait_for(pidfile)
        for session in daemon.session_pids():
            os.kill(session, 9)
        result = future.result(timeout=30)
        assert result.error["type"] == "HostDropped"
        assert re.match(rf"ssh host {re.escape(first)} dropped during the attempt: ", result.error["message"])
        assert gone(pid), "the remote attempt outlived its connection"
        retry = executor.submit(spec(ops, "hello", name="again"), lambda event: None).result(timeout=60)
        assert retry.ok and retry.host == second, retry
    finally:
        executor.shutdown()
