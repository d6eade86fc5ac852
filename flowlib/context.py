"""`current`: what a running operator can ask about its run and send back to it.

A worker binds a `TaskContext` around each attempt; outside a run, `current` is a
harmless stand-in, so operators stay plain, unit-testable functions.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_log = logging.getLogger("flowlib.current")


class Checkpoints:
    """`current.checkpoint`: save and load progress of a long operator."""

    def __init__(
        self, save: Callable[[Any, int | None], None] | None, load: Callable[[], Any] | None
    ) -> None:
        self._save, self._load = save, load

    def save(self, obj: Any, step: int | None = None) -> None:
        """Store `obj` as this node's latest checkpoint (does nothing outside a run)."""
        if self._save is not None:
            self._save(obj, step)

    def load(self) -> Any:
        """Return the latest checkpoint of this node in this run or its resume chain, else None."""
        return self._load() if self._load is not None else None


@dataclass
class TaskContext:
    run_id: str | None = None
    node: str | None = None
    attempt: int = 1
    gpus: list[int] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    emit: Callable[[str, dict[str, Any]], None] | None = None
    checkpoint: Checkpoints = field(default_factory=lambda: Checkpoints(None, None))
    logger: logging.Logger = _log


_OUTSIDE = TaskContext()  # what `current` reports outside a run
_CONTEXT: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("flowlib_task", default=None)


def _get() -> TaskContext:
    return _CONTEXT.get() or _OUTSIDE


def bind(context: TaskContext) -> contextvars.Token:
    return _CONTEXT.set(context)


def unbind(token: contextvars.Token) -> None:
    _CONTEXT.reset(token)


class Current:
    """The running operator's view of its run: ids, devices, metrics, checkpoints, logger."""

    @property
    def run_id(self) -> str | None:
        return _get().run_id

    @property
    def node(self) -> str | None:
        return _get().node

    @property
    def attempt(self) -> int:
        return _get().attempt

    @property
    def gpus(self) -> list[int]:
        return list(_get().gpus)

    @property
    def rank(self) -> int:
        return _get().rank

    @property
    def world_size(self) -> int:
        return _get().world_size

    @property
    def checkpoint(self) -> Checkpoints:
        return _get().checkpoint

    @property
    def logger(self) -> logging.Logger:
        return _get().logger

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record a metric of this node (only logged locally outside a run)."""
        context = _get()
        if context.emit is None:
            _log.info("metric %s=%s step=%s", name, value, step)
            return
        context.emit("metric", {"name": str(name), "value": float(value), "step": step, "time": time.time()})

    def __repr__(self) -> str:
        context = _get()
        return f"<current run={context.run_id} node={context.node} attempt={context.attempt}>"


current = Current()
