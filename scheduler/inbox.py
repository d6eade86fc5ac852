"""The scheduler's inbox: messages from any thread (or a signal handler), and the one place
the scheduler's loop waits, on them and on the loops of the executors it drives."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import Any


class Inbox:
    def __init__(self) -> None:
        self._messages: deque[tuple] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sleeping = False

    def put(self, message: tuple) -> None:
        """Queue a message; safe from any thread and in a signal handler."""
        self._messages.append(message)
        if self._sleeping:  # set before the waiter last looked at the queue: it must wake
            try:
                os.write(self._wake_w, b"\0")
            except OSError:
                pass  # the pipe is full of wake-ups already, or the run is over

    def wait(self, timeout: float | None, handles: Sequence[Any] = (), spin: float = 0.0) -> list[Any]:
        """Wait until a message is queued, one of `handles` is ready or `timeout` seconds pass;
        return the ready handles. With `spin`, poll for that many seconds before sleeping."""
        self._sleeping = True
        try:
            waited = [self._wake_r, *handles]
            started = time.perf_counter()
            ready = self._spin(waited, spin if timeout is None else min(spin, timeout))
            if not ready and not self._messages:
                left = None if timeout is None else max(0.0, timeout - (time.perf_counter() - started))
                ready = wait(waited, left)
        finally:
            self._sleeping = False
        if self._wake_r in ready or self._messages:  # a put while we slept may have written
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return [handle for handle in ready if handle != self._wake_r]

    def _spin(self, waited: list[Any], seconds: float) -> list[Any]:
        """Poll the handles at least once (queued messages must not starve them), for `seconds`.

        A process that sleeps for a moment wakes up slowly on a virtual machine (its CPU halts,
        then runs cold): a chain of quick nodes ran a sixth faster with this."""
        end = time.perf_counter() + seconds
        while True:
            ready = wait(waited, 0)
            if ready or self._messages or time.perf_counter() >= end:
                return ready

    def take(self) -> list[tuple]:
        """Every message queued so far, oldest first."""
        messages = []
        while self._messages:
            messages.append(self._messages.popleft())
        return messages

    def close(self) -> None:
        """Stop waking: a late put from another thread then fails on the closed pipe. Its write
        end closes with the inbox itself, so such a put never writes to a reused descriptor."""
        self._sleeping = False
        os.close(self._wake_r)

    def __del__(self) -> None:
        os.close(self._wake_w)
