"""One worker process of the local pool, the task it runs, and how such a process ended."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from executors.base import EventSink, TaskSpec
from executors.channel import Channel
from executors.stopping import STOP_SIGNAL


@dataclass
class PoolTask:
    spec: TaskSpec
    on_event: EventSink
    future: Future
    deadline: float | None = None
    started: float = field(default_factory=time.time)
    cpus: float = 0.0  # what it holds of the pool while it runs
    held: bool = False  # handed over ahead of its start: it starts once released
    log_sent: int = 0  # bytes of the worker's capture file its "log" events carried
    stop_by: float | None = None  # stopped gently (executors.stopping): killed if still running then
    began: bool = False  # the worker reported the operator's start: its deadline counts from then

    @classmethod
    def of(cls, spec: TaskSpec, on_event: EventSink, *, held: bool = False) -> PoolTask:
        # a deadline is set when the task starts; 0.0 until then marks that it will have one
        return cls(spec, on_event, Future(), 0.0 if spec.timeout else None, held=held)


class WorkerProcess(Protocol):
    """A worker's process, however it was started (see executors.launch)."""

    pid: int | None  # None until a template has forked it
    started: bool | None  # False: it never came to be (its template could not fork it)

    def alive(self) -> bool: ...
    def kill_group(self) -> None: ...
    def signal(self, signum: int) -> bool: ...
    def wait(self, timeout: float | None = None) -> int | None: ...


@dataclass
class PoolWorker:
    process: WorkerProcess
    conn: Channel
    task: PoolTask | None = None
    kill_reason: tuple[str, str] | None = None
    one_shot: bool = False  # runs a single task, then exits and is not replaced (a Seat's worker)
    on_exit: Callable[[], None] | None = None  # a one-shot worker's seat, freed once it has exited
    log_path: str | None = None  # where the worker captures what attempts print

    def unsent_log(self) -> str:
        """What the running task printed that its "log" events did not carry (after a crash)."""
        from executors.capture import read_unsent

        return read_unsent(self.log_path, self.task.log_sent if self.task else 0) if self.log_path else ""

    def forget_log(self) -> None:
        if self.log_path:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass

    def alive(self) -> bool:
        return self.process.alive()

    def exited(self) -> None:
        """The process has ended: free a one-shot worker's seat (once)."""
        free, self.on_exit = self.on_exit, None
        if free is not None:
            free()

    def end_input(self) -> None:
        """Tell a worker no task follows: its next receive sees EOF and it exits."""
        try:
            self.conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.kill()

    def kill(self) -> None:
        """Kill the worker and every process it started (it leads its own process group)."""
        self.process.kill_group()

    def stop_operator(self) -> bool:
        """Ask the worker to stop its running operator and live on (executors.stopping)."""
        return self.process.signal(STOP_SIGNAL)


def describe_exit(exitcode: int | None) -> tuple[str, int | None, int | None]:
    """Return (how the process ended, exit code, signal number)."""
    if exitcode is None:
        return "the worker process vanished", None, None
    if exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"the worker process was killed by {name} (signal {number})", None, number
    return f"the worker process exited with code {exitcode} before finishing the task", exitcode, None
