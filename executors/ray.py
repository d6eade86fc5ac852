"""`ray`: each node is a Ray task on a local Ray started on demand or on an existing cluster.

Ray is imported only in `start`, so flowlib stays light where Ray is not used.
Workers read inputs from and write outputs to the artifact store at the spec's
`store_url`: on a local Ray that is the local folder, but a cluster of several
machines needs a store every node reaches (`FLOW_ARTIFACTS` set to a shared
fsspec URL, e.g. `s3://bucket/flow`), flowlib installed in every node's Python,
and the pipeline file at the same path on every node.

Events (metrics, checkpoints) stream back through a small async actor, the
executor's inbox: a worker pushes them in batches while the task runs, and one
thread here long-polls the inbox and resolves finished tasks. A task returns
how many events it sent, so its result is handed over only after all its events
(what runs on the Ray side is `executors.ray_task`).
Flowlib's retries stay with the scheduler: every Ray task has `max_retries=0`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import re
import socket
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from executors.base import Event, EventSink, Executor, TaskResult, TaskSpec
from executors.ray_task import _STARTED, _Inbox, _run_attempt
from flowlib.errors import ConfigError
from flowlib.resources import Resources

_log = logging.getLogger("flowlib.executors.ray")
REACH_S = 5.0  # how long connecting to a cluster's address may take
POLL_S = 5.0  # how long one long-poll of the inbox waits when nothing happens
FLUSH_GRACE_S = 10.0  # how long a finished task waits for events still on their way


def _route_ray_errors() -> None:
    """Send the "(raylet) A worker died ..." notices Ray prints on the driver's *stdout* to a logger.

    They would corrupt `flow run --json`, and the failed attempt already says what happened.
    This replaces a private Ray function; where it is missing, Ray prints as before.
    """
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "flowlib_routed", False):
        return

    def route(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix)
            return
        for line in data.get("lines") or ():
            _log.debug("Ray: %s", line)

    route.flowlib_routed = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = route


# -- mapping Ray's failures onto ours -------------------------------------------------------------


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def failure_from(task_id: str, exc: BaseException, started: float) -> TaskResult:
    """Turn an exception from a Ray task's result into a failed TaskResult saying what happened."""
    import ray.exceptions as rex

    text = str(exc)
    pid = re.search(r"Worker PID: (\d+)", text)
    where = re.search(r"Worker IP address: (\S+)", text)
    how: dict[str, Any] = {"started_at": started, "pid": int(pid.group(1)) if pid else None}
    if where:
        how["host"] = where.group(1)
    if isinstance(exc, rex.OutOfMemoryError):
        return TaskResult.failure(
            task_id,
            "OutOfMemory",
            f"Ray killed the task because its node ran out of memory: {_first_line(text)}",
            **how,
        )
    if isinstance(exc, rex.WorkerCrashedError):
        detail = re.search(r"Worker exit detail: (.*?)(?: Some common causes|$)", text, re.DOTALL)
        at = f" (pid {how['pid']})" if how["pid"] else ""
        said = f"; Ray says: {detail.group(1).strip()}" if detail and detail.group(1).strip() else ""
        return TaskResult.failure(
            task_id,
            "WorkerDied",
            f"the Ray worker process{at} died while running the task: it called os._exit, was killed by "
            f"a signal (SIGKILL, the kernel's OOM killer) or crashed (SIGSEGV){said}",
            **how,
        )
    if isinstance(exc, rex.TaskCancelledError):
        return TaskResult.failure(task_id, "Cancelled", "the Ray task was cancelled outside flowlib", **how)
    if isinstance(exc, rex.TaskUnschedulableError):
        return TaskResult.failure(task_id, "Unschedulable", _first_line(text), **how)
    if isinstance(
        exc, (rex.NodeDiedError, rex.LocalRayletDiedError, rex.ObjectLostError, rex.RaySystemError)
    ):
        return TaskResult.failure(task_id, "WorkerDied", f"Ray lost the task: {_first_line(text)}", **how)
    if isinstance(exc, rex.RayTaskError):  # our task body itself failed, e.g. flowlib missing on a node
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        result = TaskResult.failure(
            task_id, type(cause).__name__, f"the Ray task could not run: {cause}", **how
        )
        result.error["traceback"] = getattr(exc, "traceback_str", None)  # type: ignore[index]
        return result
    return TaskResult.failure(task_id, type(exc).__name__, f"Ray: {_first_line(text)}", **how)


def _check_reachable(address: str) -> None:
    """Fail fast on a cluster address nobody listens at (Ray itself retries for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"[executors.ray] address: '{address}' is not 'auto', 'host:port' or 'ray://host:port'"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_S).close()
    except OSError as exc:
        raise ConfigError(
            f"[executors.ray] address: cannot reach the Ray cluster at '{address}': {exc}"
        ) from None


# -- the executor (driver side) ----------------------------------------------------------------------


@dataclasses.dataclass
class _Task:
    spec: TaskSpec
    on_event: EventSink
    future: Future
    ref: Any
    submitted: float
    received: int = 0
    result: TaskResult | None = None  # finished, waiting for `expected` events
    expected: int = 0
    timer: threading.Timer | None = None


class RayExecutor(Executor):
    """Runs each node as a Ray task with `num_cpus`/`num_gpus`/`memory` from its Resources."""

    name = "ray"

    def __init__(self) -> None:
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()
        self._messages: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._started_ray = False
        self._streaming = True
        self._closing = False
        self._inbox: Any = None
        self._remote: Any = None
        self._totals: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, settings: Mapping[str, Any]) -> None:
        """Connect to Ray: reuse one already up in this process, start a local one, or join `address`."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        try:
            import ray
        except ImportError:
            raise ConfigError("executor 'ray' needs Ray, which is not installed: pip install ray") from None
        address = str(settings.get("address") or "")
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            if address:
                _check_reachable(address)
                options["address"] = address
            else:
                options.update(
                    address="local",
                    num_cpus=settings.get("num_cpus"),
                    num_gpus=settings.get("num_gpus"),
                )
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at '{address}'" if address else "a local Ray"
                raise ConfigError(f"[executors.ray] address: cannot start or reach {where}: {exc}") from None
            self._started_ray = True
        _route_ray_errors()
        self._totals = dict(ray.cluster_resources())
        # Ray queues tasks until their resources are free, so more than capacity may be in flight:
        # its workers then never idle while the scheduler commits a step.
        self.prefetch = max(2, int(self._totals.get("CPU", 0)))
        self._remote = ray.remote(_run_attempt)
        self._inbox = ray.remote(num_cpus=0)(_Inbox).remote()
        self._thread = threading.Thread(target=self._loop, name="flowlib-ray", daemon=True)
        self._thread.start()
        self._poll()

    def capacity(self) -> Resources:
        """The cluster's totals when the executor started (the scheduler asks once per node)."""
        memory = self._totals.get("memory")
        return Resources(
            cpus=self._totals.get("CPU", 0.0),
            gpus=int(self._totals.get("GPU", 0)),
            memory=int(memory) if memory else None,
        )

    def shutdown(self) -> None:
        """Cancel what still runs, stop the inbox, and stop Ray only if this executor started it."""
        import ray

        self._closing = True
        self._messages.put(("stop",))
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            left = list(self._tasks)
        for task_id in left:
            self._stop(task_id, "Cancelled", "the executor shut down")
        if not ray.is_initialized():
            return
        if self._started_ray:
            ray.shutdown()
        elif self._inbox is not None:
            try:
                ray.kill(self._inbox)
            except Exception:
                pass

    # -- tasks --------------------------------------------------------------------------------------
    def submit(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        future: Future[TaskResult] = Future()
        refusal = self._refuse(task)
        if refusal is not None:
            future.set_result(TaskResult.failure(task.task_id, *refusal))
            return future
        resources = task.resources
        ref = self._remote.options(
            num_cpus=resources.cpus,
            num_gpus=resources.gpus,
            memory=resources.memory or None,
            max_retries=0,
            retry_exceptions=False,
            name=f"flow:{task.node}",
        ).remote(task, self._inbox, list(sys.path))
        entry = _Task(task, on_event, future, ref, time.time())
        with self._lock:
            self._tasks[task.task_id] = entry
        if not self._streaming:
            self._arm_timeout(task.task_id)  # no "started" event will come
        ref.future().add_done_callback(lambda done, _id=task.task_id: self._on_done(_id, done))
        return future

    def _refuse(self, task: TaskSpec) -> tuple[str, str] | None:
        """Why this executor cannot run `task` at all (Ray would otherwise wait forever), else None."""
        if task.distributed is not None:
            return (
                "NotSupported",
                "distributed operators (Distributed(...)) do not run on the 'ray' "
                "executor yet; run this operator with executor='local' or 'gpu'",
            )
        memory = self._totals.get("memory")
        if task.resources.memory and memory and task.resources.memory > memory:
            return (
                "Unschedulable",
                f"the task asks for {task.resources.memory} bytes of memory, but the Ray "
                f"cluster has {int(memory)} in all",
            )
        return None

    def cancel(self, task_id: str) -> None:
        self._stop(task_id, "Cancelled", "cancelled while running on Ray")

    def _stop(self, task_id: str, kind: str, message: str) -> None:
        """Force-cancel the Ray task (its worker is killed) and fail the attempt as `kind` now."""
        import ray

        with self._lock:
            task = self._tasks.pop(task_id, None)
        if task is None:
            return
        try:
            ray.cancel(task.ref, force=True)
        except Exception:
            pass  # it finished meanwhile, or Ray is going away
        self._settle(task, TaskResult.failure(task_id, kind, message, started_at=task.submitted))

    @staticmethod
    def _settle(task: _Task, result: TaskResult) -> None:
        """Hand over the result of a task already taken out of `_tasks` (so exactly once)."""
        if task.timer is not None:
            task.timer.cancel()
        if not task.future.done():
            task.future.set_result(result)

    def _on_done(self, task_id: str, done: Future) -> None:
        """A Ray task ended (on Ray's callback thread): settle it, or wait for events still on their way."""
        error: Exception | None = None
        try:
            result, sent = done.result()
        except Exception as exc:
            result, sent, error = None, 0, exc
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return  # cancelled or timed out already
            if sent > task.received and self._streaming:
                if task.timer is not None:
                    task.timer.cancel()  # it has ended: no timeout any more, only a wait for its events
                task.result, task.expected = result, sent
                task.timer = threading.Timer(FLUSH_GRACE_S, self._flush_now, args=(task_id,))
                task.timer.daemon = True
                task.timer.start()
                return
            del self._tasks[task_id]
        if error is not None:
            result = failure_from(task_id, error, task.submitted)
        self._settle(task, result)

    def _flush_now(self, task_id: str) -> None:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.result is None:
                return
            del self._tasks[task_id]
        self._settle(task, task.result)

    def _arm_timeout(self, task_id: str) -> None:
        """Start the attempt's clock when it starts running (it may first wait for cluster resources)."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.result is not None or task.timer is not None or not task.spec.timeout:
                return
            message = f"timed out after {task.spec.timeout:g} s and was killed"
            task.timer = threading.Timer(task.spec.timeout, self._stop, args=(task_id, "Timeout", message))
            task.timer.daemon = True
            task.timer.start()

    # -- the events thread: long-polls the inbox and hands events over in order ------------------
    def _poll(self) -> None:
        if self._closing or not self._streaming:
            return
        ref = self._inbox.take.remote(POLL_S)
        ref.future().add_done_callback(lambda done: self._messages.put(("events", done)))

    def _loop(self) -> None:
        while True:
            message = self._messages.get()
            if message[0] == "stop":
                return
            self._on_events(message[1])

    def _on_events(self, done: Future) -> None:
        try:
            batch = done.result()
        except Exception:
            self._streaming = False  # the inbox is gone: settle tasks without waiting for their events
            with self._lock:
                waiting = [t for t in self._tasks.values() if t.result is not None]
                for task in waiting:
                    del self._tasks[task.spec.task_id]
                running = list(self._tasks)
            for task in waiting:
                self._settle(task, task.result)  # type: ignore[arg-type]
            for task_id in running:
                self._arm_timeout(task_id)  # their "started" events will not come
            return
        for task_id, kind, data, when in batch:
            with self._lock:
                task = self._tasks.get(task_id)
            if task is None:
                continue
            if kind == _STARTED:
                self._arm_timeout(task_id)
            else:
                try:
                    task.on_event(Event(task_id, kind, data, when))
                except Exception:
                    pass  # a sink's trouble must not stop the other tasks' events
            with self._lock:  # counted only once handed over, so the result never overtakes an event
                task.received += 1
                ended = task.result is not None and task.received >= task.expected
                if ended:
                    self._tasks.pop(task_id, None)
            if ended:
                self._settle(task, task.result)  # type: ignore[arg-type]
        self._poll()
