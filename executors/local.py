"""`local`: a pool of warm worker processes on this machine (see executors.pool).

`[executors.local] start` says how a new worker starts: "fork" (the default) forks it
from a template process that imported the run's pipelines once (executors.template);
"spawn" starts a fresh interpreter that imports them itself.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from concurrent.futures import Future
from typing import Any

from executors.base import EventSink, Executor, TaskResult, TaskSpec, machine_memory
from executors.launch import FORK, SPAWN
from executors.pool import WorkerPool
from flowlib.errors import ConfigError
from flowlib.resources import Resources


def pool_settings(settings: Mapping[str, Any], section: str) -> tuple[int, str]:
    """The pool's size and how its workers start, from an `[executors.NAME]` table."""
    size = int(settings.get("workers") or os.cpu_count() or 1)
    if size < 1:
        raise ConfigError(f"[executors.{section}] workers: expected at least 1, got {size}")
    start = settings.get("start", FORK)
    if start not in (FORK, SPAWN):
        raise ConfigError(f'[executors.{section}] start: expected "{FORK}" or "{SPAWN}", got {start!r}')
    return size, start


class PooledExecutor(Executor):
    """An executor whose attempts run in a WorkerPool on this machine; `start` builds the pool."""

    pool: WorkerPool

    def use(self, pool: WorkerPool) -> None:
        """Run attempts in `pool` from now on (and open it)."""
        self.pool = pool
        # tasks beyond capacity that the pool queues itself, so its workers never idle
        # while the scheduler commits a step
        self.prefetch = 4 * pool.size
        pool.open()

    def capacity(self) -> Resources:
        return Resources(cpus=self.pool.size, gpus=0, memory=machine_memory())

    def submit(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        return self.pool.submit(task, on_event)

    def submit_held(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        """Like `submit`, but the task starts only once `release`d (see WorkerPool.submit)."""
        return self.pool.submit(task, on_event, held=True)

    def release(self, task_ids: Collection[str]) -> None:
        self.pool.release(task_ids)

    def cancel(self, task_id: str) -> None:
        self.pool.cancel(task_id)

    def stop(self, task_id: str, grace: float) -> None:
        self.pool.cancel(task_id, grace)

    def shutdown(self) -> None:
        self.pool.close()

    # the loop, for a caller that runs it on its own thread (executors.base.Drivable)
    def drive_here(self) -> None:
        self.pool.drive_here()

    def loop_handles(self) -> list[Any]:
        return self.pool.loop_handles()

    def loop_timeout(self) -> float | None:
        return self.pool.loop_timeout()

    def serve(self, ready: Collection[Any]) -> None:
        self.pool.serve(ready)


class LocalExecutor(PooledExecutor):
    name = "local"

    def start(self, settings: Mapping[str, Any]) -> None:
        size, start = pool_settings(settings, self.name)
        self.use(WorkerPool(size, start=start))
