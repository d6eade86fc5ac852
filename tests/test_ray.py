"""The `ray` executor on the session's local Ray cluster (a head node, num_cpus=2; see tests/conftest.py);
the last tests add a second node to train across two nodes. What every executor does is checked by
test_executor_conformance.py; these are Ray's own behaviours."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")

from executors.base import Executor, OperatorRef, TaskSpec  # noqa: E402
from executors.ray import RayExecutor, failure_from  # noqa: E402
from flowlib import Distributed, Resources  # noqa: E402
from flowlib.api import run  # noqa: E402
from flowlib.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster(ray_head: Any) -> str:
    return ray_head.address


def spans(folder: Path) -> dict[str, tuple[float, float, int]]:
    """What operators recorded in `folder`: name -> (start, end, pid)."""
    found = {}
    for path in folder.glob("*"):
        if path.suffix == ".started":
            continue
        start, end, pid = path.read_text().split()
        found[path.name] = (float(start), float(end), int(pid))
    return found


PIPELINE = """
import os, time
from flowlib import Resources, current, operator, workflow

SPANS = {spans!r}

def record(name, meet=None):
    # note when this ran; with `meet`, first wait until that node runs too (so both run at once)
    start = time.time()
    open(os.path.join(SPANS, name + ".started"), "w").close()
    while meet and not os.path.exists(os.path.join(SPANS, meet + ".started")):
        if time.time() > start + 30:
            raise TimeoutError(f"{{name}} never ran beside {{meet}}")
        time.sleep(0.01)
    time.sleep(0.2)
    with open(os.path.join(SPANS, name), "w") as f:
        f.write(f"{{start}} {{time.time()}} {{os.getpid()}}")

@operator(resources=Resources(cpus=2))
def big(n: int) -> list[int]:
    record("big")
    current.log_metric("rows", n, step=1)
    return list(range(n))

@operator(resources=Resources(cpus=1))
def left(n: int) -> int:
    record("left", meet="right")
    return n

@operator(resources=Resources(cpus=1))
def right(n: int) -> int:
    record("right", meet="left")
    return 2 * n

@operator(retries=2, retry_delay=0.05)
def flaky(x: int) -> int:
    current.log_metric("attempt", current.attempt)
    before = current.checkpoint.load() or 0
    current.checkpoint.save(before + 1)
    if current.attempt < 3:
        raise RuntimeError(f"attempt {{current.attempt}} fails")
    return x + before

@operator(resources=Resources(gpus=1))
def device() -> list[int]:
    return current.gpus

@operator
def square(x: int) -> int:
    return x * x

@operator
def total(a: int, b: int, c: int, squares: list[int], gpus: list[int]) -> int:
    assert gpus == [0], gpus
    return a + b + c + sum(squares)

@workflow
def pipeline(n: int = 4) -> int:
    return total(left(n), right(n), flaky(100), square.map(big(n)), device())
"""


def test_a_dag_with_resources_retries_metrics_and_a_map(project, ray_cluster, tmp_path):
    folder = tmp_path / "spans"
    folder.mkdir()
    project.write("p.py", PIPELINE.format(spans=str(folder)))
    result = run(project.load("p.py").pipeline, executor="ray", db=f"sqlite:///{tmp_path / 'flow.db'}")

    assert result.status == "succeeded", result.error
    # flaky's third attempt found the checkpoint its first two saved
    assert result.outputs == 4 + 8 + (100 + 2) + (0 + 1 + 4 + 9)
    nodes = {node.name: node for node in result.nodes}
    assert nodes["flaky"].attempts == 3 and nodes["flaky"].status == "succeeded"
    assert {f"square[{i}]" for i in range(4)} <= set(nodes)
    # the two cpus=1 nodes met while running (else one would have timed out waiting); the
    # independent cpus=2 node ran alone, before or after them, and all ran in Ray workers
    found = spans(folder)
    (big_start, big_end, big_pid), left_, right_ = found["big"], found["left"], found["right"]
    assert left_[0] < right_[1] and right_[0] < left_[1], found
    assert big_end <= min(left_[0], right_[0]) or big_start >= max(left_[1], right_[1]), found
    assert os.getpid() not in {big_pid, left_[2], right_[2]}

    metrics = project.flow("metrics", result.run_id, "--db", f"sqlite:///{tmp_path / 'flow.db'}", "--json")
    assert metrics.code == 0, metrics
    rows = {(m["node"], m["name"], m["attempt"]): (m["value"], m["step"]) for m in metrics.json()}
    assert rows[("big", "rows", 1)] == (4.0, 1)
    assert [rows[("flaky", "attempt", n)][0] for n in (1, 2, 3)] == [1.0, 2.0, 3.0]


FAILURES = """
import os, time
from flowlib import operator, workflow

PIDS = {pids!r}

@operator
def dies(x: int) -> int:
    os._exit(1)

@operator(timeout=1)
def sleepy(x: int) -> int:
    with open(PIDS, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
    return x

@operator
def fine(x: int) -> int:
    return x + 1

@workflow
def failures() -> list[int]:
    return [dies(1), sleepy(2), fine(3)]
"""


def test_a_worker_crash_and_a_timeout_fail_only_their_nodes(project, ray_cluster, tmp_path):
    pids = tmp_path / "sleepy.pid"
    project.write("p.py", FAILURES.format(pids=str(pids)))
    started = time.monotonic()
    result = run(project.load("p.py").failures, executor="ray", db=f"sqlite:///{tmp_path / 'flow.db'}")
    assert time.monotonic() - started < 50  # sleepy's minute was cut short by its timeout

    assert result.status == "failed"
    nodes = {node.name: node for node in result.nodes}
    assert nodes["fine"].status == "succeeded"
    died = nodes["dies"]
    assert died.status == "failed" and died.error["type"] == "WorkerDied", died.error
    assert (
        "Ray worker process" in died.error["message"]
        and "died while running the task" in died.error["message"]
    )
    slept = nodes["sleepy"]
    assert slept.error["type"] == "Timeout" and "timed out after 1 s" in slept.error["message"], slept.error
    _gone(int(pids.read_text()))


def _gone(pid: int) -> None:
    """Wait until the Ray worker process `pid` has been killed."""
    deadline = time.monotonic() + 10
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:  # gone (also between a check and a look)
            return
        assert time.monotonic() < deadline, f"the Ray worker {pid} still runs"
        time.sleep(0.1)


def test_flow_run_connects_to_an_existing_cluster_by_address(project, ray_cluster):
    (project.root / "flow.toml").write_text(f'[executors.ray]\naddress = "{ray_cluster}"\n')
    project.write(
        "p.py",
        """
from flowlib import current, operator, workflow

@operator
def numbers(n: int) -> list[int]:
    current.log_metric("size", n)
    print("made", n)
    return list(range(n))

@operator
def double(x: int) -> int:
    return 2 * x

@workflow
def doubled(n: int = 3) -> list[int]:
    return double.map(numbers(n))
""",
    )
    done = project.flow("run", "p.py", "--executor", "ray", "--json")
    assert done.code == 0, done
    result = done.json()
    assert result["outputs"] == [0, 2, 4]
    assert project.flow("metrics", result["run_id"]).out.split() == ["numbers", "size=3"]
    assert "made 3" in project.flow("logs", result["run_id"], "numbers").out


EDITED = """
from flowlib import operator, workflow

@operator
def value(i: int) -> int:
    return VALUE

@workflow
def values() -> list[int]:
    return value.map([0, 1, 2, 3])
"""


def test_warm_workers_run_the_pipeline_as_edited(project, ray_cluster, tmp_path):
    """In one driver process Ray's workers outlive a run: an edit (a fix) must reach them."""
    from flowlib.loading import load_module

    for number in (1, 20):  # not (1, 2): an edit that keeps size and second is missed by .pyc checks
        path = project.write("edited.py", EDITED.replace("VALUE", str(number)))
        sys.modules.pop("edited", None)
        module = load_module(path, "edited")
        result = run(module.values, executor="ray", db=f"sqlite:///{tmp_path / 'flow.db'}")
        assert result.outputs == [number] * 4


# -- the executor on its own -------------------------------------------------------------------------

OPS = """
from flowlib import current, operator

@operator
def add(x: int, y: int) -> int:
    current.log_metric("x", x)
    return x + y
"""


def _spec(project, tmp_path, qualname: str, inputs: dict, **extra) -> TaskSpec:
    path = project.write("ops.py", OPS)
    return TaskSpec(
        task_id=f"t-{qualname}-{time.monotonic_ns()}",
        run_id="r1",
        node=qualname,
        attempt=1,
        operator=OperatorRef(str(path), "ops", qualname),
        inputs={name: {"literal": value} for name, value in inputs.items()},
        store_url=str(tmp_path / "store"),
        **extra,
    )


def test_requests_no_ray_node_can_meet_fail_at_submit(project, ray_cluster, tmp_path):
    executor: Executor = RayExecutor()
    executor.start({})
    try:
        spec = _spec(project, tmp_path, "add", {"x": 1, "y": 1}, distributed=Distributed(nnodes=2))
        refused = executor.submit(spec, lambda _: None).result(timeout=5)
        assert refused.error["type"] == "Unschedulable", refused.error
        assert "on each of 2 Ray nodes, but 1 of 1 can" in refused.error["message"]

        spec = _spec(project, tmp_path, "add", {"x": 1, "y": 1}, resources=Resources(memory="100TiB"))
        assert executor.submit(spec, lambda _: None).result(timeout=5).error["type"] == "Unschedulable"
    finally:
        executor.shutdown()
    assert ray.is_initialized(), "an executor must not stop a Ray it did not start"


def test_ray_failures_map_onto_ours():
    crashed = ray.exceptions.WorkerCrashedError()
    assert failure_from("t", crashed, 0.0).error["type"] == "WorkerDied"
    oom = failure_from(
        "t", ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory."), 0.0
    )
    assert oom.error["type"] == "OutOfMemory" and "ran out of memory" in oom.error["message"]


def test_without_ray_installed_start_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match="pip install ray"):
        RayExecutor().start({})


def test_importing_the_executor_does_not_import_ray():
    code = "import sys, executors.ray, flowlib; assert 'ray' not in sys.modules, 'ray was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- training across two nodes (these come last: they add a node to the cluster) -------------------

SPREAD = """
import os, pathlib, time
import psutil
import torch
import torch.distributed as dist
from flowlib import Distributed, Resources, current, operator, workflow

MARKS = pathlib.Path({marks!r})

def raylet():  # the node this process runs on, told apart by its raylet
    return next((p.pid for p in psutil.Process().parents() if "raylet" in p.name()), -1)

@operator(distributed=Distributed(nprocs=1, nnodes=2))
def allsum(x: int) -> dict:
    total = torch.tensor([x + current.rank])
    dist.all_reduce(total)
    me = {{key: os.environ[key] for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR")}}
    me["raylet"] = raylet()
    everyone = [None] * current.world_size
    dist.all_gather_object(everyone, me)
    return {{"sum": int(total.item()), "ranks": everyone}}

@operator(resources=Resources(labels=["big-mem"]))
def big(i: int) -> int:
    return raylet()

@workflow
def spread(x: int = 10) -> dict:
    return {{"group": allsum(x), "big": big.map([0, 1])}}

@operator(distributed=Distributed(nprocs=1, nnodes=2))
def half_broken(x: int) -> int:
    (MARKS / f"rank{{current.rank}}").write_text(str(os.getpid()))
    if current.rank == 1:
        time.sleep(0.5)
        raise RuntimeError("rank-1-marker")
    time.sleep(120)  # only the executor can stop this rank
    return x

@workflow
def broken(x: int = 1) -> int:
    return half_broken(x)

@operator(resources=Resources(labels=["gpu-box"]))
def nowhere(x: int) -> int:
    return x

@workflow
def impossible(x: int = 1) -> int:
    return nowhere(x)
"""


@pytest.fixture(scope="module")
def two_nodes(ray_head: Any) -> Iterator[Any]:
    """The head node plus a second one that declares the label "big-mem" (a custom resource)."""
    node = ray_head.add_node(num_cpus=2, resources={"big-mem": 1})
    ray_head.wait_for_nodes()
    yield node
    ray_head.remove_node(node)


def _raylet(node: Any) -> int:
    return node.all_processes["raylet"][0].process.pid


@pytest.mark.slow
def test_a_two_node_group_all_reduces_across_two_ray_nodes(project, ray_head, two_nodes, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    project.write("p.py", SPREAD.format(marks=str(marks)))
    result = run(project.load("p.py").spread, executor="ray", db=f"sqlite:///{tmp_path / 'flow.db'}")
    assert result.status == "succeeded", [n.error for n in result.nodes]
    group = result.outputs["group"]
    assert group["sum"] == 2 * 10 + 1
    ranks = sorted(group["ranks"], key=lambda r: r["RANK"])
    assert [(r["RANK"], r["LOCAL_RANK"], r["NODE_RANK"], r["WORLD_SIZE"]) for r in ranks] == [
        ("0", "0", "0", "2"),
        ("1", "0", "1", "2"),
    ]
    assert {r["raylet"] for r in ranks} == {_raylet(ray_head.head_node), _raylet(two_nodes)}
    # rank 0's node: both nodes of this cluster share the machine's address
    assert ranks[0]["MASTER_ADDR"] == ranks[1]["MASTER_ADDR"] == ray_head.head_node.node_ip_address
    assert result.outputs["big"] == [_raylet(two_nodes)] * 2  # only the node with the label


@pytest.mark.slow
def test_a_failing_rank_stops_the_group_on_every_ray_node(project, ray_head, two_nodes, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    project.write("p.py", SPREAD.format(marks=str(marks)))
    started = time.monotonic()
    result = run(project.load("p.py").broken, executor="ray", db=f"sqlite:///{tmp_path / 'flow.db'}")
    assert time.monotonic() - started < 60, "rank 0 was not stopped: the run waited for its sleep"
    error = result.nodes[0].error
    assert result.status == "failed" and error["type"] == "RuntimeError", error
    assert "rank 1 of 2: rank-1-marker" in error["message"], error
    for rank in (0, 1):
        _gone(int((marks / f"rank{rank}").read_text()))
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU") != 4.0:  # the placement group is gone too
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.1)


def test_a_label_no_ray_node_declares_is_refused_before_anything_runs(project, ray_cluster, tmp_path):
    project.write("p.py", SPREAD.format(marks=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"no label 'gpu-box'.*ray start --resources"):
        run(project.load("p.py").impossible, executor="ray", db=f"sqlite:///{tmp_path / 'flow.db'}")
