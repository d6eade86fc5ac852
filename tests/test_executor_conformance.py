"""One conformance suite for every executor: the same tasks through the same five methods.

`ssh` runs against a real sshd on 127.0.0.1 and `ray` on a local Ray cluster, both started
once per session (tests/conftest.py); `gpu` declares two devices this machine need not have.
An executor that cannot run here is skipped with the reason. Adding an executor? Add it to
EXECUTORS (and its capacity to CAPACITY).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import wait
from multiprocessing import connection
from pathlib import Path
from typing import Any

import psutil
import pytest

from executors.base import Drivable, Event, Executor, Holding, OperatorRef, TaskSpec
from executors.registry import executor_class
from flowlib.resources import Distributed, Resources

EXECUTORS = ["inline", "local", "gpu", "ssh", "ray"]
# the same executors with their loop run by a caller's thread, as the scheduler runs it
DRIVEN = ["local", "gpu"]
# (cpus, gpus) each executor offers as these tests start it
CAPACITY = {
    "inline": (os.cpu_count(), 0),
    "local": (2, 0),
    "gpu": (2, 2),
    "ssh": (2, 0),
    "ray": (2, 1),
}

PIPELINE = """
import os, time
from flowlib import current, operator

@operator
def double(x: int) -> int:
    current.log_metric("seen", x)
    print("doubling", x)
    return 2 * x

@operator
def broken(x: int) -> int:
    raise ValueError("broken-marker")

@operator
def touch(path: str) -> int:
    open(path, "w").close()
    return 1

@operator
def live(flag: str) -> int:
    current.log_metric("progress", 1)
    print("halfway there", flush=True)
    deadline = time.time() + 30
    while not os.path.exists(flag):  # the test creates it once the events reached it
        if time.time() > deadline:
            raise TimeoutError("the events did not reach the caller while the task ran")
        time.sleep(0.02)
    return 1

def record_pid(pidfile: str) -> None:
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pidfile + ".tmp", pidfile)

@operator
def nap(pidfile: str, seconds: float) -> int:
    record_pid(pidfile)
    time.sleep(seconds)
    return 1

@operator
def parent(pidfile: str, seconds: float) -> int:
    import subprocess
    child = subprocess.Popen(["sleep", str(seconds)])  # left running, as an operator may
    with open(pidfile + ".child.tmp", "w") as f:
        f.write(str(child.pid))
    os.replace(pidfile + ".child.tmp", pidfile + ".child")
    record_pid(pidfile)
    time.sleep(seconds)
    return 1

@operator
def stubborn(pidfile: str, seconds: float) -> int:
    import signal
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # deaf to a gentle stop
    record_pid(pidfile)
    time.sleep(seconds)
    return 1

@operator
def dies(x: int) -> int:
    print("last words", flush=True)
    time.sleep(3.0)  # long enough for the words to be streamed (Ray sends its first event late)
    os._exit(3)
"""


def settings(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The [executors.NAME] table each executor starts with here; skips what this machine lacks."""
    if name == "ssh":
        daemon = request.getfixturevalue("sshd_host")
        return {
            "hosts": [daemon.host],
            "identity_file": str(daemon.identity_file),
            "known_hosts": str(daemon.known_hosts),
            "python": sys.executable,  # the "host" is this machine: its interpreter has flowlib
            "workdir": str(tmp_path / "remote"),
            "slots": 2,
        }
    if name == "ray":
        request.getfixturevalue("ray_head")  # the executor finds Ray initialised and uses it
        return {}
    return {"inline": {}, "local": {"workers": 2}, "gpu": {"workers": 2, "devices": [0, 1]}}[name]


def started(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Executor:
    instance: Executor = executor_class(name)()
    instance.start(settings(name, request, tmp_path))
    return instance


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the gpu executor's lock files
    monkeypatch.delenv("FLOW_GPUS", raising=False)


@pytest.fixture(params=[*EXECUTORS, *(f"{name} driven" for name in DRIVEN)])
def executor(request, isolated, tmp_path):  # type: ignore[no-untyped-def]
    name, _, driven = request.param.partition(" ")
    instance = started(name, request, tmp_path)
    stop = threading.Event()
    driver = threading.Thread(target=drive, args=(instance, stop), daemon=True)
    if driven:
        assert isinstance(instance, Drivable)
        instance.drive_here()
        driver.start()
    yield instance
    stop.set()
    if driven:
        driver.join(timeout=10)
    instance.shutdown()


def drive(executor: Drivable, stop: threading.Event) -> None:
    """Run an executor's loop on this thread, as the scheduler does between its steps."""
    while not stop.is_set():
        limit = executor.loop_timeout()
        executor.serve(connection.wait(executor.loop_handles(), 0.1 if limit is None else min(limit, 0.1)))


def spec(tmp_path: Path, qualname: str, x: Any = None, **extra: Any) -> TaskSpec:
    code = tmp_path / "code"
    pipeline = code / "conformance_pipeline.py"
    if not pipeline.exists():
        code.mkdir(exist_ok=True)
        pipeline.write_text(PIPELINE)
    inputs = extra.pop("inputs", {"x": {"literal": x}})
    return TaskSpec(
        task_id=f"{qualname}-{x}-{time.monotonic_ns()}",
        run_id="r1",
        node=qualname,
        attempt=1,
        operator=OperatorRef(str(pipeline), "conformance_pipeline", qualname),
        inputs=inputs,
        store_url=str(tmp_path / "store"),
        fsync=False,
        project_root=str(code),
        **extra,
    )


def napping(tmp_path: Path, name: str, seconds: float, **extra: Any) -> tuple[TaskSpec, Path]:
    pidfile = tmp_path / f"{name}.pid"
    inputs = {"pidfile": {"literal": str(pidfile)}, "seconds": {"literal": seconds}}
    return spec(tmp_path, "nap", name, inputs=inputs, **extra), pidfile


def pid_in(path: Path, within: float = 30.0) -> int:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared: the task did not start"
        time.sleep(0.02)
    return int(path.read_text())


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def runs_in_background(executor: Executor) -> None:
    if executor.runs_in_submit:
        pytest.skip(f"{executor.name} runs a task inside submit(): nothing runs in the background")


def printed(result: Any, events: list[Event]) -> str:
    """What the attempt printed: streamed as "log" events while it ran, the rest in the result."""
    return "".join(e.data["text"] for e in events if e.kind == "log") + result.log


# -- capacity() and refuses() ----------------------------------------------------------------------
def test_capacity_is_what_the_executor_offers(executor):
    capacity = executor.capacity()
    assert isinstance(capacity, Resources)
    assert (capacity.cpus, capacity.gpus) == CAPACITY[executor.name]


def test_refuses_only_what_it_could_never_run(executor):
    cpus, gpus = CAPACITY[executor.name]
    assert executor.refuses(Resources(cpus=cpus, gpus=gpus), None) is None
    for resources, distributed, words in [
        (Resources(cpus=cpus + 1), None, f"{cpus + 1:g} CPUs"),
        (Resources(gpus=gpus + 1), None, f"{gpus + 1} GPUs"),
        (Resources(labels=["nowhere"]), None, "'nowhere'"),
        (Resources(), Distributed(nprocs=1, nnodes=2), "2"),
    ]:
        reason = executor.refuses(resources, distributed)
        assert reason is not None and reason.startswith("asks for") and "\n" not in reason, reason
        assert words in reason, reason


# -- submit(), events, errors ---------------------------------------------------------------------
def test_submit_runs_the_task_and_reports_metrics_and_output(executor, tmp_path):
    events: list[Event] = []
    result = executor.submit(spec(tmp_path, "double", 21), events.append).result(timeout=60)
    assert result.ok, result.error
    assert result.outputs["return"]["digest"] and result.ended_at >= result.started_at
    assert "doubling 21" in printed(result, events)
    assert [(e.kind, e.data["name"], e.data["value"]) for e in events if e.kind == "metric"] == [
        ("metric", "seen", 21.0)
    ]


def test_events_arrive_while_the_task_runs(executor, tmp_path):
    runs_in_background(executor)
    flag = tmp_path / "flag"
    seen: list[Event] = []

    def on_event(event: Event) -> None:
        seen.append(event)
        kinds = {e.kind for e in seen}
        if {"metric", "started"} <= kinds and "halfway there" in printed_so_far(seen):
            flag.touch()

    result = executor.submit(spec(tmp_path, "live", inputs={"flag": {"literal": str(flag)}}), on_event)
    assert result.result(timeout=60).ok, "the metric, the log line and 'started' must stream while it runs"
    started = [e for e in seen if e.kind == "started"]
    assert len(started) == 1 and started[0].data["time"] <= time.time()


def printed_so_far(events: list[Event]) -> str:
    return "".join(e.data["text"] for e in events if e.kind == "log")


def test_a_failing_task_is_a_failed_result_with_the_users_traceback(executor, tmp_path):
    result = executor.submit(spec(tmp_path, "broken", 1), lambda _: None).result(timeout=60)
    assert not result.ok and result.error["type"] == "ValueError"
    assert result.error["message"] == "broken-marker"
    trace = result.error["traceback"]
    assert "conformance_pipeline.py" in trace and 'raise ValueError("broken-marker")' in trace, trace
    assert "executors" + os.sep + "worker.py" not in trace, "the user's traceback starts at their code"


def test_many_tasks_all_finish(executor, tmp_path):
    futures = [executor.submit(spec(tmp_path, "double", i), lambda _: None) for i in range(12)]
    done, _ = wait(futures, timeout=120)
    assert len(done) == 12 and all(f.result().ok for f in futures)


# -- cancel(), timeouts, a dying worker -------------------------------------------------------------
def test_cancel_stops_the_task_and_its_process(executor, tmp_path):
    runs_in_background(executor)
    task, pidfile = napping(tmp_path, "cancelled", 60)
    future = executor.submit(task, lambda _: None)
    pid = pid_in(pidfile)
    asked = time.monotonic()
    executor.cancel(task.task_id)
    result = future.result(timeout=40)
    assert not result.ok and result.error["type"] == "Cancelled"
    assert time.monotonic() - asked < 30  # not the nap's minute
    assert gone(pid), "the task's process outlived the cancel"


def test_stop_ends_the_task_as_cancelled_and_a_pool_keeps_its_worker(executor, tmp_path):
    runs_in_background(executor)
    task, pidfile = napping(tmp_path, "stopped", 60)
    future = executor.submit(task, lambda _: None)
    pid = pid_in(pidfile)
    asked = time.monotonic()
    executor.stop(task.task_id, 5.0)
    again, again_pid = napping(tmp_path, "after", 0.1)
    following = executor.submit(again, lambda _: None)  # while the worker stops, as a sweep's next trial
    result = future.result(timeout=40)
    assert not result.ok and result.error["type"] == "Cancelled", result.error
    assert time.monotonic() - asked < 30  # not the nap's minute
    assert following.result(timeout=30).ok
    if executor.name not in ("local", "gpu"):  # elsewhere a stop is a cancel
        assert gone(pid), "the task's process outlived the stop"
        return
    assert psutil.Process(pid).is_running(), "a gently stopped operator's worker was killed"
    assert pid_in(again_pid) == pid, "the next task did not wait for the stopping warm worker"


def test_a_stop_also_ends_the_processes_the_operator_started(executor, tmp_path):
    runs_in_background(executor)
    pidfile = tmp_path / "parent.pid"
    inputs = {"pidfile": {"literal": str(pidfile)}, "seconds": {"literal": 60}}
    task = spec(tmp_path, "parent", "parent", inputs=inputs)
    future = executor.submit(task, lambda _: None)
    pid_in(pidfile)
    child = pid_in(tmp_path / "parent.pid.child")
    executor.stop(task.task_id, 5.0)
    result = future.result(timeout=20)
    assert not result.ok and result.error["type"] == "Cancelled", result.error
    assert gone(child), "a process the stopped operator started outlived the stop"


def test_an_operator_deaf_to_a_stop_is_killed_after_the_grace(executor, tmp_path):
    runs_in_background(executor)
    pidfile = tmp_path / "deaf.pid"
    inputs = {"pidfile": {"literal": str(pidfile)}, "seconds": {"literal": 60}}
    task = spec(tmp_path, "stubborn", "deaf", inputs=inputs)
    future = executor.submit(task, lambda _: None)
    pid = pid_in(pidfile)
    executor.stop(task.task_id, 1.0)
    result = future.result(timeout=20)
    assert not result.ok and result.error["type"] == "Cancelled", result.error
    assert gone(pid), "the task's process outlived the stop"


def test_a_timeout_kills_the_task(executor, tmp_path):
    runs_in_background(executor)
    task, pidfile = napping(tmp_path, "timed", 60, timeout=1.0)
    result = executor.submit(task, lambda _: None).result(timeout=30)
    assert result.error["type"] == "Timeout" and "timed out after 1 s" in result.error["message"]
    assert gone(pid_in(pidfile)), "the task's process outlived its timeout"


def test_a_timeout_counts_from_the_start_not_from_the_submit(executor, tmp_path):
    runs_in_background(executor)
    cpus, _ = CAPACITY[executor.name]
    busy = [executor.submit(napping(tmp_path, f"busy{i}", 2.5)[0], lambda _: None) for i in range(cpus)]
    time.sleep(0.5)
    waiting, _ = napping(tmp_path, "queued", 0.2, timeout=1.5)  # waits ~2 s for a free slot first
    result = executor.submit(waiting, lambda _: None).result(timeout=60)
    assert result.ok, result.error
    assert all(f.result(timeout=60).ok for f in busy)


def test_a_dying_worker_fails_only_its_attempt(executor, tmp_path):
    runs_in_background(executor)  # inline would take the test process down with it
    events: list[Event] = []
    result = executor.submit(spec(tmp_path, "dies", 1), events.append).result(timeout=60)
    assert not result.ok and result.error["type"] == "WorkerDied", result.error
    assert "last words" in printed(result, events)
    assert executor.submit(spec(tmp_path, "double", 2), lambda _: None).result(timeout=60).ok


# -- shutdown() -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXECUTORS)
def test_shutdown_stops_what_runs(name, request, isolated, tmp_path):
    instance = started(name, request, tmp_path)
    runs_in_background(instance)
    task, pidfile = napping(tmp_path, "shutdown", 60)
    future = instance.submit(task, lambda _: None)
    pid = pid_in(pidfile)
    instance.shutdown()
    assert future.result(timeout=5).error["type"] == "Cancelled"
    assert gone(pid), "a task's process outlived shutdown()"


# -- the local pool's own contract: a loop a caller may drive, tasks held until released -------------
def test_a_driven_loop_cannot_also_get_a_thread(tmp_path):
    instance = executor_class("local")()
    instance.start({"workers": 1})
    try:
        instance.submit(spec(tmp_path, "double", 1), lambda _: None).result(timeout=60)
        with pytest.raises(RuntimeError, match="own thread"):
            instance.drive_here()
    finally:
        instance.shutdown()


def held(executor):  # type: ignore[no-untyped-def]
    if not isinstance(executor, Holding):
        pytest.skip(f"{executor.name} does not hold tasks")
    return executor


def test_a_held_task_starts_only_once_released(executor, tmp_path):
    executor = held(executor)
    marker = tmp_path / "started"
    task = spec(tmp_path, "touch", 1, inputs={"path": {"literal": str(marker)}})
    future = executor.submit_held(task, lambda _: None)
    time.sleep(1.5)  # long enough for a worker to take it and load it
    assert not marker.exists() and not future.done()
    executor.release([task.task_id])
    result = future.result(timeout=60)
    assert result.ok, result.error
    assert marker.exists()


def test_a_held_tasks_timeout_counts_from_its_release(executor, tmp_path):
    executor = held(executor)
    task = spec(tmp_path, "double", 4, timeout=1.0)
    future = executor.submit_held(task, lambda _: None)
    time.sleep(2.0)
    assert not future.done()
    executor.release([task.task_id])
    assert future.result(timeout=60).ok


def test_a_held_task_can_be_cancelled_before_its_release(executor, tmp_path):
    executor = held(executor)
    task = spec(tmp_path, "double", 5)
    future = executor.submit_held(task, lambda _: None)
    time.sleep(1.0)
    executor.cancel(task.task_id)
    assert future.result(timeout=20).error["type"] == "Cancelled"
    assert executor.submit(spec(tmp_path, "double", 6), lambda _: None).result(timeout=60).ok


def test_a_held_task_that_fails_before_its_start_reports_after_its_release(executor, tmp_path):
    executor = held(executor)
    missing = {"x": {"digest": "0" * 64}}  # no such artifact: loading the inputs fails
    task = spec(tmp_path, "double", 7, inputs=missing)
    future = executor.submit_held(task, lambda _: None)
    time.sleep(1.5)
    assert not future.done()
    executor.release([task.task_id])
    result = future.result(timeout=60)
    assert not result.ok and result.error["type"] != "WorkerDied", result.error
    # the worker is still in step with the pool: the next task runs normally
    assert executor.submit(spec(tmp_path, "double", 8), lambda _: None).result(timeout=60).ok


def test_a_driven_pool_nobody_serves_yet_takes_many_tasks_with_timeouts(tmp_path):
    # each such submit wakes the loop; undrained wake-ups must not block the submitting thread
    instance = executor_class("local")()
    instance.start({"workers": 1})
    instance.drive_here()
    done = threading.Event()

    def submit_all() -> None:
        for i in range(20_000):
            instance.submit(spec(tmp_path, "double", i, timeout=60.0), lambda _: None)
        done.set()

    threading.Thread(target=submit_all, daemon=True).start()
    finished = done.wait(120)
    if finished:  # a blocked submitter would block shutdown's own wake-up too
        instance.shutdown()
    assert finished, "submitting blocked on the pool's undrained wake-ups"
