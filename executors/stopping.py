"""Stopping a worker's running operator without killing the worker (a sweep's pruned trial).

Killing the worker stops anything, but the next task then waits for a fresh worker and pays
its warm-up again (a torch training's first step took a second more). A gentle stop sends the
worker STOP_SIGNAL instead; its handler raises OperatorStopped in the operator's code at its
next bytecode, as Ctrl-C would, and the worker lives on for the next task. The pool kills the
worker if the operator has not ended within the grace it gave (stuck in C code, say).

The processes the operator started (its worker's descendants) are killed once it stopped: a
cancel stops them too, as a kill of the worker's process group would.

The exception is raised only while the operator's own code runs. A stop that comes while
flowlib's code runs (loading inputs, sending an event: a frame cut in half would break the
worker's channel) is kept, and raised as soon as control is back in the operator's code.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

STOP_SIGNAL = signal.SIGUSR1
GRACE_S = 2.0  # how long a stopped operator (a sweep's pruned trial) has before its worker is killed
F = TypeVar("F", bound=Callable[..., Any])


class OperatorStopped(BaseException):
    """Raised in an operator stopped gently (a BaseException: `except Exception` lets it through)."""


class _State:
    user_code = False  # the operator's own code is running (in this process's main thread)
    pending = False  # a stop came while it was not


def install() -> None:
    """Handle STOP_SIGNAL in this worker process (call it in the main thread)."""
    signal.signal(STOP_SIGNAL, _on_signal)


def _on_signal(_signum: int, _frame: Any) -> None:
    if _State.user_code:
        _stop()
    _State.pending = True


def _stop() -> None:
    _State.pending = False
    raise OperatorStopped("stopped while running (the run was cancelled)")


def begin_task() -> None:
    """A task starts: a stop meant for the one before it no longer counts."""
    _State.pending = False


@contextmanager
def user_code() -> Iterator[None]:
    """Around the call of the operator: a stop raises inside it (at once if it came already)."""
    if _State.pending:
        _stop()
    _State.user_code = True
    try:
        yield
    finally:
        _State.user_code = False


def flowlib_code(function: F) -> F:
    """`function`, called from the operator, never interrupted by a stop; one that came while it
    ran is raised when it returns."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        was = _State.user_code
        _State.user_code = False
        try:
            return function(*args, **kwargs)
        finally:
            _State.user_code = was
            if was and _State.pending:
                _stop()

    return guarded  # type: ignore[return-value]


def end_descendants() -> None:
    """Kill the processes this worker's stopped operator left running."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
