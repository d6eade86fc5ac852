"""One conformance suite for the executors that run on this machine without a server.

Each executor runs the same tasks through the same five methods (ssh and ray have
their own suites in test_ssh.py and test_ray.py, which start the servers they need).
Adding an executor? Add it to EXECUTORS.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait
from multiprocessing import connection

import pytest

from executors.base import Drivable, Event, Executor, Holding, OperatorRef, TaskSpec
from executors.registry import executor_class
from flowlib.resources import Resources

EXECUTORS = {"inline": {}, "local": {"workers": 2}, "gpu": {"workers": 2, "devices": [0, 1]}}
# the same executors with their loop run by a caller's thread, as the scheduler runs it
DRIVEN = ["local", "gpu"]

PIPELINE = """
import time
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
def sleepy(x: int) -> int:
    time.sleep(30)
    return x
"""


@pytest.fixture(params=[*EXECUTORS, *(f"{name} driven" for name in DRIVEN)])
def executor(request, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the gpu executor's lock files
    monkeypatch.delenv("FLOW_GPUS", raising=False)
    name, _, driven = request.param.partition(" ")
    instance: Executor = executor_class(name)()
    instance.start(EXECUTORS[name])
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


def spec(tmp_path, qualname: str, x: int, **extra) -> TaskSpec:  # type: ignore[no-untyped-def]
    pipeline = tmp_path / "conformance_pipeline.py"
    if not pipeline.exists():
        pipeline.write_text(PIPELINE)
    return TaskSpec(
        task_id=f"{qualname}-{x}",
        run_id="r1",
        node=qualname,
        attempt=1,
        operator=OperatorRef(str(pipeline), "conformance_pipeline", qualname),
        store_url=str(tmp_path / "store"),
        fsync=False,
        **{"inputs": {"x": {"literal": x}}, **extra},
    )


def test_capacity_is_a_resources_total(executor):
    capacity = executor.capacity()
    assert isinstance(capacity, Resources) and capacity.cpus >= 1


def test_submit_runs_the_task_and_reports_events(executor, tmp_path):
    events: list[Event] = []
    future = executor.submit(spec(tmp_path, "double", 21), events.append)
    result = future.result(timeout=60)
    assert result.ok, result.error
    assert result.outputs["return"]["digest"] and "doubling 21" in result.log
    assert [(e.kind, e.data["name"], e.data["value"]) for e in events] == [("metric", "seen", 21.0)]


def test_a_failing_task_is_a_failed_result_not_an_exception(executor, tmp_path):
    result = executor.submit(spec(tmp_path, "broken", 1), lambda _: None).result(timeout=60)
    assert (
        not result.ok and result.error["type"] == "ValueError" and "broken-marker" in result.error["message"]
    )


def test_many_tasks_all_finish(executor, tmp_path):
    futures = [executor.submit(spec(tmp_path, "double", i), lambda _: None) for i in range(12)]
    done, _ = wait(futures, timeout=120)
    assert len(done) == 12 and all(f.result().ok for f in futures)


def test_cancel_and_timeout_stop_a_running_task(executor, tmp_path):
    if executor.name == "inline":
        pytest.skip("inline runs a task inside submit(): nothing runs in the background to stop")
    started = time.monotonic()
    cancelled = executor.submit(spec(tmp_path, "sleepy", 1), lambda _: None)
    time.sleep(1.0)
    executor.cancel("sleepy-1")
    assert cancelled.result(timeout=20).error["type"] == "Cancelled"
    timed = executor.submit(spec(tmp_path, "sleepy", 2, timeout=1.0), lambda _: None).result(timeout=20)
    assert timed.error["type"] == "Timeout"
    assert time.monotonic() - started < 20


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
