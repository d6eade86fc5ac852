"""`inline`: run each task in the scheduler's own process, one at a time (for debugging)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from executors.base import Event, EventSink, Executor, TaskResult, TaskSpec, machine_memory
from executors.worker import execute
from flowlib.resources import Resources


class InlineExecutor(Executor):
    """Runs tasks synchronously in-process; timeouts and cancellation cannot interrupt them."""

    name = "inline"
    prefetch = 64  # tasks finish inside submit(): hand over a batch per scheduling step
    runs_in_submit = True

    def start(self, settings: Mapping[str, Any]) -> None:
        self._cpus = os.cpu_count() or 1

    def capacity(self) -> Resources:
        return Resources(cpus=self._cpus, gpus=0, memory=machine_memory())

    def submit(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        future: Future[TaskResult] = Future()

        def emit(kind: str, data: dict[str, Any]) -> None:
            on_event(Event(task.task_id, kind, data))

        future.set_result(execute(task, emit, capture="inline"))
        return future

    def cancel(self, task_id: str) -> None:
        """Nothing runs in the background, so there is nothing to stop."""

    def shutdown(self) -> None:
        """Nothing was started."""
