"""The `gpu` executor without a GPU: devices declared with FLOW_GPUS or flow.toml, real `flow run` processes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e import MARK, TRACEBACK, Project, alive, make_project

from executors.devices import DeviceLocks, resolve_devices
from flowlib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path / "proj")


@pytest.fixture
def host(tmp_path: Path) -> dict[str, str]:
    """The environment of one host: its own temp folder, so its device locks are the test's alone."""
    tmp = tmp_path / "host-tmp"
    tmp.mkdir()
    return {"TMPDIR": str(tmp)}


# Each node says which devices it got and when it held them; `meet` waits until its partner has
# started too, so two nodes that both return met=True provably held their devices at the same time.
PROBE = """
import os, time
from pathlib import Path
from flowlib import operator, workflow, current, Resources

def seen(tag: str) -> dict:
    return {"gpus": current.gpus, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": time.time()}

def meet(me: str, other: str) -> bool:
    Path(me).touch()
    deadline = time.time() + 30
    while time.time() < deadline:
        if Path(other).exists():
            return True
        time.sleep(0.05)
    return False

@operator(resources=Resources(gpus=1), cache=False)
def one(me: str, other: str) -> dict:
    info = seen(me)
    info["met"] = meet(me, other)
    time.sleep(0.3)
    return {**info, "end": time.time()}

@operator(resources=Resources(gpus=2), cache=False)
def two(x: int) -> dict:
    return {**seen("two"), "end": time.time()}

@operator(cache=False)
def none(x: int) -> dict:
    return {**seen("none"), "end": time.time()}

@workflow
def probes() -> dict:
    return {"a": one("a.started", "b.started"), "b": one("b.started", "a.started"), "both": two(1), "cpu": none(1)}
"""


def _overlap(x: dict, y: dict) -> bool:
    return x["start"] < y["end"] and y["start"] < x["end"]


def test_concurrent_nodes_get_distinct_devices_and_a_gpus_2_node_gets_both(project, host):
    project.write("p.py", PROBE)
    done = project.flow("run", "p.py", "--executor", "gpu", "--json", env={**host, "FLOW_GPUS": "0,1"})
    assert done.code == 0, done
    out = done.json()["outputs"]
    a, b, both, cpu = out["a"], out["b"], out["both"], out["cpu"]
    assert a["met"] and b["met"] and _overlap(a, b), "the two gpus=1 nodes did not run at the same time"
    assert sorted(a["gpus"] + b["gpus"]) == [0, 1]
    assert a["visible"] == str(a["gpus"][0]) and b["visible"] == str(b["gpus"][0])
    assert both["gpus"] == [0, 1] and both["visible"] == "0,1"
    assert not _overlap(both, a) and not _overlap(both, b), "a device was shared"
    assert cpu["gpus"] == [] and cpu["visible"] == "", "a gpus=0 node must see no GPU"


def test_more_gpus_than_the_host_has_is_exit_2_before_recording(project, host):
    project.write(
        "p.py",
        """
from flowlib import operator, workflow, Resources, Distributed

@operator(resources=Resources(gpus=3))
def greedy(x: int) -> int:
    return x

@operator(resources=Resources(gpus=1), distributed=Distributed(nprocs=2))
def ranks(x: int) -> int:
    return x

@workflow
def big() -> int:
    return greedy(1)

@workflow
def wide() -> int:
    return ranks(1)
""",
    )
    for workflow, gpus, operator, asked in [
        ("big", "0,1", "greedy", "3 GPUs"),
        ("wide", "0", "ranks", "2 GPUs"),
    ]:
        done = project.flow("run", "p.py", workflow, "--executor", "gpu", env={**host, "FLOW_GPUS": gpus})
        assert done.code == 2, done
        assert not re.search(TRACEBACK, done.err, re.MULTILINE), done
        assert len([line for line in done.err.splitlines() if line.strip()]) == 1, done
        assert f"'{operator}'" in done.err and asked in done.err, done
        assert re.search(
            rf"executor 'gpu' has at most [\d.]+ CPUs and {len(gpus.split(','))} GPUs", done.err
        ), done
    assert project.flow("runs", "--json").json() == []


def test_a_bad_flow_gpus_is_exit_2(project, host):
    project.write("p.py", PROBE)
    done = project.flow("run", "p.py", "--executor", "gpu", env={**host, "FLOW_GPUS": "0,zero"})
    assert done.code == 2 and "FLOW_GPUS" in done.err and not re.search(TRACEBACK, done.err, re.MULTILINE), (
        done
    )


HOLD = """
import json, os, time
from flowlib import operator, workflow, current, Resources

@operator(resources=Resources(gpus=1), cache=False)
def hold(seconds: float) -> dict:
    start = time.time()
    time.sleep(seconds)
    return {"gpus": current.gpus, "start": start, "end": time.time()}

@workflow
def holding(seconds: float = 1.5) -> dict:
    return hold(seconds)
"""


def test_two_runs_on_one_host_never_share_a_device(tmp_path, host):
    projects = [make_project(tmp_path / name) for name in ("first", "second")]
    env = {**host, "FLOW_GPUS": "0"}
    for project in projects:
        project.write("p.py", HOLD)
    processes = [p.popen("run", "p.py", "--executor", "gpu", "--json", env=env) for p in projects]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out)["outputs"])
    first, second = results
    assert first["gpus"] == second["gpus"] == [0]
    assert not _overlap(first, second), f"both runs held device 0 at once: {first} {second}"


def test_ctrl_c_frees_the_device_for_a_waiting_run(tmp_path, host):
    holder, waiter = make_project(tmp_path / "holder"), make_project(tmp_path / "waiter")
    env = {**host, "FLOW_GPUS": "0"}
    holder.write("p.py", MARK + HOLD.replace("start = time.time()", 'start = time.time(); mark("hold")'))
    waiter.write("p.py", HOLD)
    first = holder.popen("run", "p.py", "--executor", "gpu", "-p", "seconds=60", env=env)
    assert _wait_for(lambda: holder.marks("hold")), "the holding node never started"
    second = waiter.popen("run", "p.py", "--executor", "gpu", "-p", "seconds=0", "--json", env=env)
    time.sleep(1.0)
    assert second.poll() is None, "the second run did not wait for the held device"
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=30) == 130
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert json.loads(out)["outputs"]["gpus"] == [0]
    worker = int(holder.marks("hold")[0].split()[-1])
    assert _wait_for(lambda: not alive(worker), 10)


def _wait_for(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_devices_from_flow_toml_and_a_per_operator_executor(project, host):
    (project.root / "flow.toml").write_text("[executors.gpu]\ndevices = [0, 1]\nworkers = 1\n")
    project.write(
        "p.py",
        """
import os
from flowlib import operator, workflow, current, Resources

@operator(resources=Resources(gpus=2), executor="gpu", cache=False)
def train(x: int) -> list:
    return [current.gpus, os.environ["CUDA_VISIBLE_DEVICES"]]

@operator(cache=False)
def prep(x: int) -> int:
    return x + 1

@workflow
def mixed() -> list:
    return train(prep(1))
""",
    )
    done = project.flow("run", "p.py", "--json", env=host)
    assert done.code == 0, done
    assert done.json()["outputs"] == [[0, 1], "0,1"]


def test_a_killed_attempt_frees_its_device(project, host):
    project.write(
        "p.py",
        """
import time
from flowlib import operator, workflow, current, Resources

@operator(resources=Resources(gpus=1), timeout=1, cache=False)
def stuck(x: int) -> int:
    time.sleep(60)
    return x

@operator(resources=Resources(gpus=1), cache=False)
def after(x: int) -> list:
    return current.gpus

@workflow
def freed() -> list:
    return [stuck(1), after(2)]
""",
    )
    done = project.flow(
        "run", "p.py", "--executor", "gpu", "--json", env={**host, "FLOW_GPUS": "0"}, timeout=60
    )
    nodes = {node["name"]: node for node in done.json()["nodes"]}
    assert done.code == 1, done
    assert nodes["stuck"]["error"]["type"] == "Timeout"
    assert nodes["after"]["status"] == "succeeded"


# -- device discovery and the lock, in this process ------------------------------------------
def test_device_precedence(tmp_path, monkeypatch):
    assert resolve_devices({"devices": [2, 3]}, {"FLOW_GPUS": "0, 1"}) == ([0, 1], "FLOW_GPUS")
    assert resolve_devices({"devices": [2, 3]}, {"CUDA_VISIBLE_DEVICES": "1"})[0] == [2, 3]
    assert resolve_devices({}, {"FLOW_GPUS": ""})[0] == []
    assert resolve_devices({}, {"CUDA_VISIBLE_DEVICES": "3,1"})[0] == [3, 1]
    assert resolve_devices({}, {"CUDA_VISIBLE_DEVICES": "-1"})[0] == []
    for settings, environ in [
        ({}, {"FLOW_GPUS": "gpu0"}),
        ({}, {"FLOW_GPUS": "0,0"}),
        ({"devices": ["0"]}, {}),
    ]:
        with pytest.raises(ConfigError):
            resolve_devices(settings, environ)
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert resolve_devices({}, {}) == ([0, 1], "nvidia-smi")


def test_locks_are_exclusive_between_holders(tmp_path):
    first, second = DeviceLocks(tmp_path, [0, 1]), DeviceLocks(tmp_path, [0, 1])
    first.prepare()
    assert first.acquire(1, "a") == [0]
    assert second.acquire(2, "b") is None and second.held == {}  # all or nothing
    assert second.acquire(1, "b") == [1]
    first.release([0])
    assert second.acquire(1, "c") == [0]


# -- the prepared check for a machine with real GPUs ---------------------------------------------
def _gpu_check():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_verdicts():
    check = _gpu_check()
    a = {
        "visible": "0",
        "gpus": [0],
        "uuid": "GPU-a",
        "pci": "0000:19:00",
        "name": "H100",
        "start": 0,
        "end": 2,
    }
    b = {
        "visible": "1",
        "gpus": [1],
        "uuid": "GPU-b",
        "pci": "0000:3b:00",
        "name": "H100",
        "start": 0.5,
        "end": 2.5,
    }
    ok, text = check.verdict([a, b])
    assert ok and "distinct" in text
    ok, text = check.verdict([a, {**b, "uuid": "GPU-a", "pci": "0000:19:00"}])
    assert not ok and "same" in text


def test_gpu_check_says_clearly_when_there_is_no_cuda_device():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 2, done
    assert "no CUDA device" in done.stdout, done


def test_gpu_check_runs_its_pipeline_end_to_end_when_simulated(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--simulate"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done
    assert "PASS: the two gpus=1 nodes ran at the same time on distinct CUDA devices" in done.stdout, done
