"""The scheduler's inbox: messages from any thread (or a signal handler), and the one place
the scheduler's loop waits, on them and on the loops of the executors it drives."""

from __future__ import annotations

import os
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
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already

    def wait(self, timeout: float | None, handles: Sequence[Any] = ()) -> list[Any]:
        """Wait until a message is queued, one of `handles` is ready or `timeout` seconds pass;
        return the ready handles."""
        self._sleeping = True
        try:
            if self._messages:
                return []
            ready = wait([self._wake_r, *handles], timeout)
        finally:
            self._sleeping = False
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            ready.remove(self._wake_r)
        return ready

    def take(self) -> list[tuple]:
        """Every message queued so far, oldest first."""
        messages = []
        while self._messages:
            messages.append(self._messages.popleft())
        return messages

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)
