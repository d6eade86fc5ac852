"""Training across machines over `ssh`: two real sshd on 127.0.0.1 (two ports, two host keys) are
two hosts sharing one workdir filesystem; `flow run` spreads a gloo group over both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import sshd
from e2e import alive

from scheduler.store import db
from scheduler.store import repository as repo

pytest.importorskip("asyncssh")
pytest.importorskip("torch")
if sshd.missing():
    pytest.skip(sshd.missing() or "", allow_module_level=True)

pytestmark = pytest.mark.slow

HEAD = """
import os, pathlib, time
import torch
import torch.distributed as dist
from flowlib import Distributed, Resources, current, operator, workflow

MARKS = pathlib.Path({marks!r})

def mark(name, text):
    with open(MARKS / name, "a") as f:
        f.write(f"{{text}} {{os.getpid()}}\\n")

def port():  # the sshd this process was started through
    return int(os.environ["SSH_CONNECTION"].split()[3])
"""

ALLSUM = """
@operator(distributed=Distributed(nprocs=2, nnodes=2, backend="gloo"))
def allsum(x: int) -> dict:
    total = torch.tensor([x + current.rank])
    dist.all_reduce(total)
    me = {key: os.environ[key] for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR")}
    me.update(port=port(), rank=current.rank, world=current.world_size)
    everyone = [None] * current.world_size
    dist.all_gather_object(everyone, me)
    print(f"rank {current.rank} reduced {int(total.item())} behind port {port()}")
    return {"sum": int(total.item()), "ranks": everyone}

@workflow
def group(x: int = 10) -> dict:
    return allsum(x)
"""

BROKEN = """
@operator(distributed=Distributed(nprocs=1, nnodes=2))
def half_broken(x: int) -> int:
    mark("rank", f"{current.rank} {port()}")
    if current.rank == 1:
        time.sleep(0.5)
        raise RuntimeError("rank-1-marker")
    time.sleep(120)  # node 0 would wait here forever: only the executor can stop it
    return x

@workflow
def broken(x: int = 1) -> int:
    return half_broken(x)
"""

RESUMING = """
@operator(distributed=Distributed(nprocs=1, nnodes=2), retries=1, retry_delay=0)
def steps(n: int) -> int:
    saved = current.checkpoint.load()
    start, total = (saved["step"], saved["total"]) if saved else (0, 0)
    mark("rank", f"{current.rank} {current.attempt} {port()}")
    for step in range(start, n):
        reduced = torch.tensor([1])
        dist.all_reduce(reduced)  # completes only while both hosts take part
        total += int(reduced.item())
        if current.rank == 0:
            current.checkpoint.save({"step": step + 1, "total": total}, step=step)
            mark("step", f"{step} attempt={current.attempt}")
        dist.barrier()
        if step == 2 and current.attempt == 1:
            if current.rank == 1:
                (MARKS / "kill-node-1").write_text("now")
            time.sleep(120)  # the test takes node 1's host away here
    return total

@workflow
def resumable(n: int = 5) -> int:
    return steps(n)
"""

PLACED = """
@operator(resources=Resources(labels=["big-mem"]))
def big(i: int) -> int:
    return port()

@operator(resources=Resources(gpus=1, accelerator="A100"))
def device(i: int) -> list:
    return [port(), os.environ.get("CUDA_VISIBLE_DEVICES")]

@operator
def anywhere(i: int) -> int:
    return port()

@workflow
def placed() -> dict:
    return {"big": big.map([0, 1, 2]), "device": device(0), "any": anywhere.map([0, 1])}
"""

IMPOSSIBLE = """
@operator(resources=RESOURCES, distributed=DISTRIBUTED)
def wanting(x: int) -> int:
    mark("ran", "wanting")
    return x

@workflow
def impossible(x: int = 1) -> int:
    return wanting(x)
"""


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sshd.Sshd, sshd.Sshd, Path]]:
    with sshd.two_hosts(tmp_path_factory.mktemp("two-sshd")) as pair:
        yield pair


def configure(project: Any, hosts: tuple[sshd.Sshd, sshd.Sshd, Path]) -> Path:
    """flow.toml: host A in the plain list, host B as a table with a label and an (accounted) A100;
    one workdir for both, as hosts that share a filesystem have. Returns the marks folder."""
    a, b, known_hosts = hosts
    (project.root / "flow.toml").write_text(
        f"""
[executors.ssh]
hosts = ["{a.host}"]
identity_file = "{a.identity_file}"
known_hosts = "{known_hosts}"
python = "{sys.executable}"
workdir = "{project.root.parent / "remote"}"

[[executors.ssh.host]]
address = "{b.host}"
labels = ["big-mem"]
gpu_type = "a100"
gpus = 1
"""
    )
    marks = project.root / "marks"
    marks.mkdir()
    return marks


def lines(marks: Path, name: str) -> list[list[str]]:
    path = marks / name
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def gone(pids: list[int], within: float = 10.0) -> list[int]:
    """The pids still alive after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        running = [p for p in pids if alive(p)]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def remote_workers_left(*daemons: sshd.Sshd, within: float = 10.0) -> list[str]:
    """Flowlib processes still running below the daemons after up to `within` seconds (a remote
    watcher exits on its own time once it has sent its result)."""
    deadline = time.monotonic() + within
    while (left := [c for d in daemons for c in remote_workers(d)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def remote_workers(daemon: sshd.Sshd) -> list[str]:
    """Command lines of flowlib processes still running below a daemon."""
    try:
        below = psutil.Process(daemon.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in below:
        try:
            command = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "executors.remote" in command or "multiprocessing" in command:
            found.append(command)
    return found


def test_a_two_node_gloo_group_all_reduces_across_both_hosts(project: Any, hosts: Any) -> None:
    a, b, _ = hosts
    marks = configure(project, hosts)
    project.write("p.py", HEAD.format(marks=str(marks)) + ALLSUM)
    done = project.flow("run", "p.py", "--executor", "ssh", "--json", timeout=240)
    assert done.code == 0, str(done)
    out = done.json()["outputs"]
    assert out["sum"] == 4 * 10 + (0 + 1 + 2 + 3)  # every rank on both hosts took part
    ranks = sorted(out["ranks"], key=lambda r: r["rank"])
    seen = [(r["RANK"], r["LOCAL_RANK"], r["NODE_RANK"], r["WORLD_SIZE"], r["port"]) for r in ranks]
    assert seen == [
        ("0", "0", "0", "4", a.port),
        ("1", "1", "0", "4", a.port),
        ("2", "0", "1", "4", b.port),
        ("3", "1", "1", "4", b.port),
    ]
    assert {r["MASTER_ADDR"] for r in ranks} == {"127.0.0.1"}  # rank 0's host
    for daemon in (a, b):
        assert "Accepted publickey" in daemon.log.read_text(), f"no login on {daemon.host}"
    logs = project.flow("logs", done.json()["run_id"]).out
    assert f"--- node 1 (ssh host {b.host}) ---" in logs and f"rank 3 reduced 46 behind port {b.port}" in logs


def test_a_failing_rank_on_node_1_stops_every_rank_on_both_hosts(project: Any, hosts: Any) -> None:
    a, b, _ = hosts
    marks = configure(project, hosts)
    project.write("p.py", HEAD.format(marks=str(marks)) + BROKEN)
    started = time.monotonic()
    done = project.flow("run", "p.py", "--executor", "ssh", "--json", timeout=240)
    assert done.code == 1, str(done)
    assert time.monotonic() - started < 60, "node 0 was not stopped: the run waited for its sleep"
    error = done.json()["nodes"][0]["error"]
    assert error["type"] == "RuntimeError", error
    assert error["message"].startswith(f"node 1 (ssh host {b.host}): rank 1 of 2: rank-1-marker"), error
    ranks = lines(marks, "rank")
    assert sorted((r[0], int(r[1])) for r in ranks) == [("0", a.port), ("1", b.port)]
    assert gone([int(r[-1]) for r in ranks]) == [], "a rank outlived the failed attempt"
    assert remote_workers_left(a, b) == []


def test_a_retry_after_a_lost_host_places_the_group_again_and_resumes(project: Any, hosts: Any) -> None:
    a, b, _ = hosts
    marks = configure(project, hosts)
    project.write("p.py", HEAD.format(marks=str(marks)) + RESUMING)
    run = subprocess.Popen(
        [str(Path(sys.executable).with_name("flow")), "run", "p.py", "--executor", "ssh", "--json"],
        cwd=project.root,
        env=project.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (marks / "kill-node-1").exists():
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.1)
        for session in b.session_pids():  # host B is gone for the running attempt
            os.kill(session, signal.SIGKILL)
        out, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, f"{out}\n{err}"
    result = json.loads(out)
    assert result["nodes"][0]["attempts"] == 2 and result["outputs"] == 2 * 5
    with db.connect(f"sqlite:///{project.root / '.flow' / 'flow.db'}").connect() as conn:
        first, second = repo.attempts_of(conn, result["run_id"], "steps")
    # the lost host is the cause, not node 0's consequent "Connection closed by peer"
    assert first.error["type"] == "HostDropped", first.error
    assert first.error["message"].startswith(f"ssh host {b.host} dropped during the attempt"), first.error
    assert second.host == f"ssh host {a.host}, ssh host {b.host}"
    steps = [" ".join(line[:2]) for line in lines(marks, "step")]
    assert steps == ["0 attempt=1", "1 attempt=1", "2 attempt=1", "3 attempt=2", "4 attempt=2"]
    ranks = lines(marks, "rank")  # rank, attempt, port, pid: the retry used both hosts again
    assert sorted((r[0], r[1], int(r[2])) for r in ranks) == [
        ("0", "1", a.port),
        ("0", "2", a.port),
        ("1", "1", b.port),
        ("1", "2", b.port),
    ]
    assert gone([int(r[-1]) for r in ranks]) == []
    assert remote_workers_left(a, b) == []


def test_labels_and_accelerators_place_a_node_only_where_they_exist(project: Any, hosts: Any) -> None:
    a, b, _ = hosts
    marks = configure(project, hosts)
    project.write("p.py", HEAD.format(marks=str(marks)) + PLACED)
    done = project.flow("run", "p.py", "--executor", "ssh", "--json", timeout=240)
    assert done.code == 0, str(done)
    out = done.json()["outputs"]
    assert out["big"] == [b.port] * 3
    assert out["device"] == [b.port, "0"]  # B's one declared GPU, given to the node that asked
    assert set(out["any"]) <= {a.port, b.port}


@pytest.mark.parametrize(
    ("resources", "distributed", "executor", "expected"),
    [
        ('Resources(labels=["gpu-box"])', "None", "ssh", "no label 'gpu-box'"),
        ('Resources(gpus=1, accelerator="h100")', "None", "ssh", "no accelerator 'h100' (has a100)"),
        ("Resources()", "Distributed(nnodes=3)", "ssh", "on each of 3 ssh hosts, but 2 of 2 can"),
        ('Resources(labels=["big-mem"])', "Distributed(nnodes=2)", "ssh", "but 1 of 2 can"),
        ("Resources()", "Distributed(nnodes=2)", "local", "executor 'local' runs on one machine"),
    ],
)
def test_a_request_no_host_can_meet_is_exit_2_before_anything_runs(
    project: Any, hosts: Any, resources: str, distributed: str, executor: str, expected: str
) -> None:
    marks = configure(project, hosts)
    source = IMPOSSIBLE.replace("RESOURCES", resources).replace("DISTRIBUTED", distributed)
    project.write("p.py", HEAD.format(marks=str(marks)) + source)
    message = project.fails("run", "p.py", "--executor", executor, expect=[expected, "p.py:"])
    assert "operator 'wanting'" in message
    assert not (marks / "ran").exists()
    assert project.flow("runs", "--json").json() == []


GANG_OPS = """
import os, pathlib, time
import torch.distributed as dist
from flowlib import current, operator

@operator
def hold(flag: str) -> int:
    while not os.path.exists(flag):  # keeps its host's only slot until the test lets go
        time.sleep(0.05)
    return 1

@operator
def stamp(folder: str) -> int:
    pathlib.Path(folder, f"rank{current.rank}").write_text(f"{time.time()} {os.getpid()}")
    dist.barrier()
    return current.world_size
"""


def test_a_group_that_cannot_be_placed_waits_and_never_starts_partly(hosts: Any, tmp_path: Path) -> None:
    from executors.base import OperatorRef, TaskSpec
    from executors.ssh import SshExecutor
    from flowlib import Distributed, Resources

    a, b, known_hosts = hosts
    code = tmp_path / "code"
    code.mkdir()
    (code / "gang_ops.py").write_text(GANG_OPS)

    def spec(name: str, **extra: Any) -> TaskSpec:
        inputs = {"flag": str(tmp_path / "let-go")} if name == "hold" else {"folder": str(tmp_path)}
        return TaskSpec(
            task_id=f"{name}-{time.monotonic_ns()}",
            run_id="r1",
            node=name,
            attempt=1,
            operator=OperatorRef(str(code / "gang_ops.py"), "gang_ops", name),
            inputs={key: {"literal": value} for key, value in inputs.items()},
            store_url=str(tmp_path / "store"),
            fsync=False,
            project_root=str(code),
            **extra,
        )

    executor = SshExecutor()
    executor.start(
        {
            "hosts": [a.host],
            "host": [{"address": b.host, "labels": ["big-mem"]}],
            "slots": 1,
            "identity_file": str(a.identity_file),
            "known_hosts": str(known_hosts),
            "python": sys.executable,
            "workdir": str(tmp_path / "remote"),
        }
    )
    try:
        held = executor.submit(spec("hold", resources=Resources(labels=["big-mem"])), lambda e: None)
        deadline = time.monotonic() + 30
        while not remote_workers(b):  # B's only slot is taken
            assert time.monotonic() < deadline
            time.sleep(0.05)
        group = executor.submit(spec("stamp", distributed=Distributed(nprocs=1, nnodes=2)), lambda e: None)
        time.sleep(2.0)
        assert not group.done() and remote_workers(a) == [], "the group started on A alone"
        let_go = time.time()
        (tmp_path / "let-go").write_text("")
        assert held.result(timeout=30).ok
        result = group.result(timeout=120)
        assert result.ok, result.error
        starts = [float((tmp_path / f"rank{r}").read_text().split()[0]) for r in (0, 1)]
        assert min(starts) > let_go, "a rank started before the group's hosts were all free"
    finally:
        executor.shutdown()
