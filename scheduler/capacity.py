"""Resources accounted per executor, so a run's nodes never oversubscribe its CPUs and GPUs."""

from __future__ import annotations

from collections.abc import Mapping

from executors.base import Executor
from flowlib.operators import Operator
from flowlib.resources import per_attempt


class Capacity:
    """What each executor holds, what the run's running nodes hold of it, and what may start."""

    def __init__(self, executors: Mapping[str, Executor]) -> None:
        self.total = {name: executor.capacity() for name, executor in executors.items()}
        # how many tasks beyond capacity an executor queues itself (see Executor.prefetch)
        self.prefetch = {name: executor.prefetch for name, executor in executors.items()}
        self.used = {name: [0.0, 0.0] for name in executors}

    def fits(self, executor: str, op: Operator) -> bool:
        used = self.used[executor]
        if used[0] == 0 and used[1] == 0:
            return True  # an idle executor takes any node it could ever hold
        total, extra = self.total[executor], self.prefetch[executor]
        need = per_attempt(op.resources, op.distributed)
        return used[0] + need.cpus <= total.cpus + extra + 1e-9 and used[1] + need.gpus <= total.gpus + extra

    def take(self, executor: str, op: Operator) -> None:
        self._add(executor, op, 1)

    def give_back(self, executor: str, op: Operator) -> None:
        self._add(executor, op, -1)

    def _add(self, executor: str, op: Operator, sign: int) -> None:
        need = per_attempt(op.resources, op.distributed)
        used = self.used[executor]
        used[0] += sign * need.cpus
        used[1] += sign * need.gpus
