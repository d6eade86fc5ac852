"""What an attempt prints, captured into its log: the last LOG_LIMIT bytes of it."""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading

LOG_LIMIT = 1 << 20  # keep the last MiB of a node's output

_sinks = threading.local()


def _sink() -> int:
    """This thread's capture file (a raw descriptor), empty and at offset 0."""
    fd = getattr(_sinks, "fd", None)
    if fd is None:
        # one per thread, kept: a new file per attempt cost more than the task
        with tempfile.TemporaryFile() as file:
            fd = _sinks.fd = os.dup(file.fileno())
    return fd


def _read_tail(fd: int, size: int) -> bytes:
    os.lseek(fd, max(0, size - LOG_LIMIT), os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, LOG_LIMIT):
        chunks.append(chunk)
    return b"".join(chunks)


class Captured:
    """Capture what the attempt prints into its log (`.text` once the block ends).

    "fd" (a worker process): file descriptors 1 and 2, so child processes and C code
    are caught too. "inline" (the scheduler's own process): descriptor 1 only, plus
    Python's sys.stdout/sys.stderr, since descriptor 2 carries the run's progress.
    """

    def __init__(self, mode: str) -> None:
        self.fds = (1, 2) if mode == "fd" else (1,)
        self.buffer = io.StringIO() if mode != "fd" else None
        self.text = ""

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
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.buffer is not None:
            sys.stdout, sys.stderr = self.streams
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip(self.fds, self.saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        size = os.lseek(self.sink, 0, os.SEEK_END)
        text = ""
        if size:  # most attempts print nothing: no read, no truncate
            text = _read_tail(self.sink, size).decode("utf-8", "replace")
            os.ftruncate(self.sink, 0)
        os.lseek(self.sink, 0, os.SEEK_SET)
        if self.buffer is not None:
            text += self.buffer.getvalue()
        self.text = text[-LOG_LIMIT:]
