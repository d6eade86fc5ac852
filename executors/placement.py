"""How a pool's owner decides, per task, that it runs on a worker of its own (see executors.pool).

The local pool runs tasks on its warm workers. An executor built on the pool (`gpu`) passes a
`Placement`: for the tasks it claims, it hands out a `Seat` (the environment and descriptors
their fresh one-shot worker starts with) and gets it back once that worker has exited.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from executors.base import TaskSpec


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Seat:
    """What a task's own worker holds: `env`, added to the worker's environment and the task's
    (`TaskSpec.env`) from the interpreter's start; `fds`, inherited by the worker and open while
    it lives; `free`, called once, after the worker has exited (however it ended)."""

    env: Mapping[str, str] = field(default_factory=dict)
    fds: tuple[int, ...] = ()
    free: Callable[[], None] = _nothing


class Unplaceable(Exception):
    """The task can never have a seat: it fails with this error `kind` and message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Placement(Protocol):
    """Claims tasks for workers of their own. The pool calls it on its loop's thread, with its
    lock held, so an implementation needs no lock of its own for what only the pool calls."""

    # While claimed tasks wait for seats: how often to ask again (seats another process holds
    # free up unseen), or None to ask only when one of this pool's seats is freed.
    retry_s: float | None

    def claims(self, spec: TaskSpec) -> bool:
        """Whether `spec` runs on a worker of its own rather than on the warm pool."""
        ...

    def seat(self, spec: TaskSpec) -> Seat | None:
        """A seat for `spec` now, or None while it must wait; raise Unplaceable to fail it."""
        ...
