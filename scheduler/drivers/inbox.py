"""The scheduler's inbox: messages from any thread (or a signal handler), and the one place
the scheduler's loop waits, on them and on the loops of the executors it drives."""

from __future__ import annotations

import selectors
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from executors.channel import Waker


class Inbox:
    def __init__(self) -> None:
        self._messages: deque[tuple] = deque()
        self._waker = Waker()
        self._sleeping = False
        # kept between waits while the handles stay the same: building and filling a selector on
        # every wait cost a fan-out's scheduler more than the poll itself (poll, as
        # multiprocessing.connection.wait uses: a closed handle shows as ready, never silently gone)
        self._selector = selectors.PollSelector()
        self._watched: list[Any] = []

    def put(self, message: tuple) -> None:
        """Queue a message; safe from any thread and in a signal handler."""
        self._messages.append(message)
        if self._sleeping:  # set before the waiter last looked at the queue: it must wake
            self._waker.wake()

    def wait(self, timeout: float | None, handles: Sequence[Any] = (), spin: float = 0.0) -> list[Any]:
        """Wait until a message is queued, one of `handles` is ready or `timeout` seconds pass;
        return the ready handles. With `spin`, poll for that many seconds before sleeping."""
        if self._messages and not handles:  # nothing to poll: no system call at all
            return []
        self._sleeping = True
        try:
            waited = [self._waker, *handles]
            started = time.perf_counter()
            ready = []
            if spin or self._messages:  # queued messages must not starve the handles: poll once
                ready = self._spin(waited, spin if timeout is None else min(spin, timeout))
            if not ready and not self._messages:
                left = None if timeout is None else max(0.0, timeout - (time.perf_counter() - started))
                ready = self._poll(waited, left)
        finally:
            self._sleeping = False
        if self._waker in ready or self._messages:  # a put while we slept may have woken it
            self._waker.drain()
        return [handle for handle in ready if handle is not self._waker]

    def _spin(self, waited: list[Any], seconds: float) -> list[Any]:
        """Poll the handles at least once, for `seconds`.

        A process that sleeps for a moment wakes up slowly on a virtual machine (its CPU halts,
        then runs cold): a chain of quick nodes ran a sixth faster with this."""
        end = time.perf_counter() + seconds
        while True:
            ready = self._poll(waited, 0)
            if ready or self._messages or time.perf_counter() >= end:
                return ready

    def _poll(self, handles: list[Any], timeout: float | None) -> list[Any]:
        if handles != self._watched:
            self._selector.close()
            self._selector = selectors.PollSelector()
            for handle in handles:
                self._selector.register(handle, selectors.EVENT_READ)
            self._watched = handles
        return [key.fileobj for key, _ in self._selector.select(timeout)]

    def take(self) -> list[tuple]:
        """Every message queued so far, oldest first."""
        messages = []
        while self._messages:
            messages.append(self._messages.popleft())
        return messages

    def close(self) -> None:
        """Stop waking (a late put from another thread is then only queued)."""
        self._sleeping = False
        self._selector.close()
        self._waker.close()
