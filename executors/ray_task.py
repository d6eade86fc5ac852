"""The Ray side of the `ray` executor: what runs in Ray's worker and actor processes.

Ray pickles `_run_attempt` and `_Inbox` by reference, so workers import this
module from the installed package; it imports nothing from the driver side.
Ray itself is imported only inside the functions that run there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
import time
from typing import Any

from executors.base import TaskResult, TaskSpec

_STARTED = "_started"  # internal event: the attempt began running (its timeout starts then)


class _Inbox:
    """An async actor holding events until the executor takes them (one long-poll at a time)."""

    def __init__(self) -> None:
        self._events: list[tuple] = []
        self._ready = asyncio.Event()

    async def push(self, batch: list[tuple]) -> None:
        self._events.extend(batch)
        self._ready.set()

    async def take(self, wait_s: float) -> list[tuple]:
        if not self._events:
            try:
                await asyncio.wait_for(self._ready.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
        events, self._events = self._events, []
        self._ready.clear()
        return events


class _Outbox:
    """Send one attempt's events to the inbox in order, batching those emitted while a push is in flight."""

    def __init__(self, inbox: Any, task_id: str) -> None:
        self._inbox, self._task_id = inbox, task_id
        self._pending: list[tuple] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.sent = 0

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        with self._cond:
            self._pending.append((self._task_id, kind, data, time.time()))
            if self._thread is None:
                self._thread = threading.Thread(target=self._send, name="flowlib-ray-events", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _send(self) -> None:
        import ray

        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            try:
                ray.get(self._inbox.push.remote(batch))
                self.sent += len(batch)
            except Exception:
                pass  # the executor is gone; nobody is left to tell

    def close(self) -> int:
        """Send what is left and return how many events reached the inbox."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=60)
        return self.sent


_last_run = {"id": ""}


def _forget_project_modules(spec: TaskSpec) -> None:
    """Re-import the pipeline's own modules once per run in this warm worker.

    A Ray worker outlives a run when the driver does (a notebook, a test session),
    so a pipeline edited since (a fix before a resume) must not run as it was.
    """
    if spec.run_id == _last_run["id"]:
        return
    _last_run["id"] = spec.run_id
    from executors import worker

    worker.forget_operators()  # operators resolved earlier in this warm process are stale
    if not spec.project_root:
        return
    root = os.path.join(os.path.abspath(spec.project_root), "")
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if (
            file.startswith(root)
            and "site-packages" not in file
            and name.partition(".")[0] not in ("flowlib", "executors", "scheduler", "migrations")
        ):
            del sys.modules[name]


def _run_attempt(spec: TaskSpec, inbox: Any, sys_path: list[str]) -> tuple[TaskResult, int]:
    """The body of every Ray task: run one attempt here, return its result and the number of events sent."""
    import ray

    from executors.worker import execute

    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    _forget_project_modules(spec)
    if spec.env.get("NODE_RANK") == "0" and not spec.env.get("MASTER_ADDR"):
        # node 0 of a multi-node group: its peers reach it at this node's address
        spec = dataclasses.replace(spec, env={**spec.env, "MASTER_ADDR": ray.util.get_node_ip_address()})
    if spec.resources.gpus:
        ids = ",".join(str(int(i)) for i in ray.get_gpu_ids())
        spec = dataclasses.replace(spec, env={**spec.env, "CUDA_VISIBLE_DEVICES": ids})
    outbox = _Outbox(inbox, spec.task_id)
    if spec.timeout:
        outbox.emit(_STARTED, {})
    result = execute(spec, outbox.emit, capture="fd")
    return result, outbox.close()
