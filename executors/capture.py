"""What an attempt prints, captured into its log, and streamed as it runs.

In a worker process descriptors 1 and 2 go to a capture file for the attempt. A watcher
thread (one per worker process) sends what was added as "log" events while the attempt
runs, so a killed or timed-out attempt keeps what it printed; the result carries the rest.
The watcher also says when an attempt has run for a moment ("started"), so the scheduler
can tell a node on a worker from one still waiting for one without a message per quick node.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

LOG_LIMIT = 1 << 20  # keep the last MiB of a node's output in its final result
STARTED_AFTER_S = 0.05  # an attempt still running after this is reported as started
STREAM_EVERY_S = 0.25  # how often new output of a running attempt is sent
REST_AFTER_S = 1.0  # the watcher sleeps until woken after this long without attempts
LOG_PATH_ENV = "FLOWLIB_WORKER_LOG"  # set by a local pool: where its worker captures (read after a crash)

_sinks = threading.local()


def _sink() -> int:
    """This thread's capture file (a raw descriptor), empty and at offset 0."""
    fd = getattr(_sinks, "fd", None)
    if fd is None:
        path = os.environ.get(LOG_PATH_ENV) if threading.current_thread() is threading.main_thread() else None
        if path:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        else:
            # one per thread, kept: a new file per attempt cost more than the task
            with tempfile.TemporaryFile() as file:
                fd = os.dup(file.fileno())
        _sinks.fd = fd
    return fd


def _read(fd: int, start: int, end: int) -> bytes:
    chunks = []
    while start < end:
        chunk = os.pread(fd, min(end - start, LOG_LIMIT), start)
        if not chunk:
            break
        chunks.append(chunk)
        start += len(chunk)
    return b"".join(chunks)


class Captured:
    """Capture what the attempt prints into its log (`.text` once the block ends).

    "fd" (a worker process): file descriptors 1 and 2, so child processes and C code
    are caught too; with `emit`, output is streamed while it runs and `.text` holds only
    what was not sent. "inline" (the scheduler's own process): descriptor 1 only, plus
    Python's sys.stdout/sys.stderr, since descriptor 2 carries the run's progress.
    """

    def __init__(self, mode: str, emit: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.fds = (1, 2) if mode == "fd" else (1,)
        self.buffer = io.StringIO() if mode != "fd" else None
        self.emit = emit if mode == "fd" else None
        self.text = ""
        self.sent = 0  # bytes of the capture file sent as log events
        self.started_at: float | None = None  # when the operator itself started
        self.reported = False  # "started" sent
        self.lock = threading.Lock()

    def __enter__(self) -> Captured:
        sys.stdout.flush()
        sys.stderr.flush()
        self.sink = _sink()
        self.saved = [os.dup(fd) for fd in self.fds]
        for fd in self.fds:
            os.dup2(self.sink, fd)
        if self.buffer is not None:
            self.streams = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = self.buffer
        if self.emit is not None:
            _watcher().watch(self)
        return self

    def begin(self, *, report: bool = False) -> None:
        """The operator starts now (after its inputs loaded). With `report` (an attempt with a
        timeout, which counts from here) "started" is sent now, from this thread, rather than by
        the watcher once the attempt has run a moment: an operator that holds the GIL must not
        keep its start from the pool."""
        self.started_at = time.time()
        if report:
            with self.lock:
                if self.emit is not None and not self.reported:
                    self.reported = True
                    self.emit("started", {"time": self.started_at})

    def poll(self, now: float) -> None:
        """Send what was added since the last poll (and "started", once), from the watcher thread."""
        with self.lock:
            if self.emit is None:
                return
            if not self.reported and self.started_at is not None and now - self.started_at >= STARTED_AFTER_S:
                self.reported = True
                self.emit("started", {"time": self.started_at})
            sys.stdout.flush()
            sys.stderr.flush()
            size = os.fstat(self.sink).st_size
            if size > self.sent:
                data = _read(self.sink, self.sent, size)
                self.sent += len(data)
                self.emit("log", {"text": data.decode("utf-8", "replace"), "end": self.sent})

    def __exit__(self, *_exc: object) -> None:
        if self.emit is not None:
            _watcher().forget(self)
            with self.lock:
                self.emit = None
        if self.buffer is not None:
            sys.stdout, sys.stderr = self.streams
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip(self.fds, self.saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        size = os.lseek(self.sink, 0, os.SEEK_END)
        text = ""
        if size > self.sent:  # most attempts print nothing: no read, no truncate
            start = max(self.sent, size - LOG_LIMIT)
            text = _read(self.sink, start, size).decode("utf-8", "replace")
        if size:
            os.ftruncate(self.sink, 0)
        os.lseek(self.sink, 0, os.SEEK_SET)
        if self.buffer is not None:
            text += self.buffer.getvalue()
        self.text = text[-LOG_LIMIT:]


class _Watcher:
    """One thread per worker process that polls the running attempts' captures on its own clock
    (a wake-up per attempt cost quick attempts more than they took); after a second without
    attempts it rests until the next one."""

    def __init__(self) -> None:
        self.watched: list[Captured] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.resting = False
        threading.Thread(target=self._loop, name="flowlib-log-stream", daemon=True).start()

    def watch(self, captured: Captured) -> None:
        with self.lock:
            self.watched.append(captured)
            if self.resting:
                self.resting = False
                self.wake.set()

    def forget(self, captured: Captured) -> None:
        with self.lock:
            if captured in self.watched:
                self.watched.remove(captured)

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self.lock:
                watched = list(self.watched)
                rest = not watched and time.monotonic() - idle_since > REST_AFTER_S
                if rest:
                    self.resting = True
                    self.wake.clear()
            if rest:
                self.wake.wait()
                idle_since = time.monotonic()
                continue
            if watched:
                idle_since = time.monotonic()
            now = time.time()
            for captured in watched:
                try:
                    captured.poll(now)
                except Exception:  # a closed pipe to the pool: the worker is going down anyway
                    pass
            due = [c.started_at + STARTED_AFTER_S - now for c in watched if not c.reported and c.started_at]
            time.sleep(min([STARTED_AFTER_S, *[d for d in due if d > 0.005]]))


_WATCHER: list[_Watcher] = []
_WATCHER_LOCK = threading.Lock()


def _watcher() -> _Watcher:
    with _WATCHER_LOCK:
        if not _WATCHER:
            _WATCHER.append(_Watcher())
        return _WATCHER[0]


def read_unsent(path: str, sent: int) -> str:
    """What a worker that died had captured beyond the `sent` bytes it streamed (its last MiB)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        return _read(fd, max(sent, size - LOG_LIMIT), size).decode("utf-8", "replace")
    finally:
        os.close(fd)
