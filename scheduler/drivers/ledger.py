"""One account of what the executors hold, shared by every run a driver executes.

So two runs in one process never oversubscribe the CPUs, GPUs or memory an executor
declares: what does not fit waits, queued.
"""

from __future__ import annotations

from collections.abc import Mapping

from executors.base import Executor
from flowlib.plan import OperatorSpec
from flowlib.resources import Resources, per_attempt


class Ledger:
    def __init__(self, executors: Mapping[str, Executor]) -> None:
        self.total = {name: executor.capacity() for name, executor in executors.items()}
        # how many tasks beyond capacity an executor queues itself (see Executor.prefetch)
        self.prefetch = {name: executor.prefetch for name, executor in executors.items()}
        self.used = {name: [0.0, 0.0, 0] for name in executors}  # cpus, gpus, memory bytes
        self.tasks = {name: 0 for name in executors}

    def fits(self, executor: str, op: OperatorSpec) -> bool:
        if self.tasks[executor] == 0:
            return True  # an idle executor takes any node it could ever hold
        used, total, extra = self.used[executor], self.total[executor], self.prefetch[executor]
        need = per_attempt(op.resources, op.distributed)
        if total.memory is not None and need.memory and used[2] + need.memory > total.memory:
            return False
        return used[0] + need.cpus <= total.cpus + extra + 1e-9 and used[1] + need.gpus <= total.gpus + extra

    def take(self, executor: str, op: OperatorSpec) -> None:
        self._add(executor, per_attempt(op.resources, op.distributed), 1)

    def give_back(self, executor: str, op: OperatorSpec) -> None:
        self._add(executor, per_attempt(op.resources, op.distributed), -1)

    def _add(self, executor: str, need: Resources, sign: int) -> None:
        used = self.used[executor]
        used[0] += sign * need.cpus
        used[1] += sign * need.gpus
        used[2] += sign * (need.memory or 0)
        self.tasks[executor] += sign
