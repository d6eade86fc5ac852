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

Nodes declare labels and accelerators as Ray custom resources (`ray start
--resources='{"big-mem": 1}'`; Ray names a GPU kind `accelerator_type:A100`): a
task asking for them requests a sliver of each, so Ray places it only there. A
`Distributed(nnodes=N)` attempt reserves N distinct nodes at once (a
STRICT_SPREAD placement group) and runs one Ray task per node (executors.ray_gang).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from executors.base import Event, EventSink, Executor, TaskResult, TaskSpec, timed_out
from executors.ray_cluster import check_reachable, custom_resources, machines, route_ray_errors
from executors.ray_cluster import failure_from as failure_from
from executors.ray_gang import RayGang
from executors.ray_task import _STARTED, _Inbox, _run_attempt
from flowlib.errors import ConfigError
from flowlib.resources import Distributed, Machine, Resources, per_node, refusal

_log = logging.getLogger("flowlib.executors.ray")
POLL_S = 5.0  # how long one long-poll of the inbox waits when nothing happens
FLUSH_GRACE_S = 10.0  # how long a finished task waits for events still on their way


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
        self._machines: list[Machine] = []
        self._kinds: dict[str, str] = {}  # accelerator kind -> its resource name in the cluster
        self._gangs: dict[str, RayGang] = {}

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
                check_reachable(address)
                options["address"] = address
            else:
                options.update(
                    address="local",
                    num_cpus=settings.get("num_cpus"),
                    num_gpus=settings.get("num_gpus"),
                    resources=settings.get("resources"),
                )
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at '{address}'" if address else "a local Ray"
                raise ConfigError(f"[executors.ray] address: cannot start or reach {where}: {exc}") from None
            self._started_ray = True
        route_ray_errors()
        self._totals = dict(ray.cluster_resources())
        self._machines = machines(ray.nodes())
        self._kinds = {
            k.partition(":")[2].lower(): k for k in self._totals if k.startswith("accelerator_type:")
        }
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

    def refuses(self, resources: Resources, distributed: Distributed | None) -> str | None:
        """Why no node (no `nnodes` distinct nodes) of the cluster could ever hold the attempt."""
        reason = refusal(self._machines, resources, distributed, "Ray nodes")
        if reason and (resources.labels or resources.accelerator):
            reason += (
                "; Ray nodes declare labels as custom resources: ray start --resources='{\"big-mem\": 1}'"
            )
        return reason

    def shutdown(self) -> None:
        """Cancel what still runs, stop the inbox, and stop Ray only if this executor started it."""
        import ray

        self._closing = True
        with self._lock:
            gangs = list(self._gangs.values())
        for gang in gangs:
            gang.cancel("Cancelled", "the executor shut down")
        for gang in gangs:
            gang.join(timeout=15)
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
        reason = self.refuses(task.resources, task.distributed)
        if reason is not None:
            future.set_result(TaskResult.failure(task.task_id, "Unschedulable", f"the task {reason}"))
            return future
        if task.distributed is not None and task.distributed.nnodes > 1:
            gang = RayGang(task, on_event, future, self._launch, self._stop, self._options(task))
            with self._lock:
                self._gangs[task.task_id] = gang
            future.add_done_callback(lambda _, _id=task.task_id: self._gangs.pop(_id, None))
            gang.start()
            return future
        return self._launch(task, on_event, self._options(task), future)

    def _options(self, task: TaskSpec) -> dict[str, Any]:
        """Ray's options for one node's share of `task` (all of it, unless it spans nodes)."""
        share = per_node(task.resources, task.distributed)
        return {
            "num_cpus": share.cpus,
            "num_gpus": share.gpus,
            "memory": share.memory or None,
            "resources": custom_resources(share, self._kinds),
        }

    def _launch(
        self,
        task: TaskSpec,
        on_event: EventSink,
        options: dict[str, Any],
        future: Future[TaskResult] | None = None,
    ) -> Future[TaskResult]:
        """Start one Ray task running `task` with these Ray `options`."""
        future = future or Future()
        ref = self._remote.options(
            **options,
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

    def cancel(self, task_id: str) -> None:
        with self._lock:
            gang = self._gangs.get(task_id)
        if gang is not None:
            gang.cancel("Cancelled", "cancelled while running on Ray")
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
            message = timed_out(task.spec.timeout)
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
