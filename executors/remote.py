"""The remote side of the `ssh` executor: `python -m executors.remote`, one attempt per process.

Protocol, over the ssh channel: stdin carries one frame, the cloudpickled
`{"spec": TaskSpec, "sys_path": [...]}`, and then stays open; stdout carries
frames `("event", task_id, kind, data)` and finally `("result", TaskResult)`.
A frame is an 8-byte big-endian length and that many bytes.

This process forks: the child runs the attempt, the parent only watches. When
stdin closes (the executor cancelled, timed out or shut down, or the connection
dropped) the parent kills the child's whole process group, so nothing the
attempt started outlives the channel.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import sys
import threading
from typing import Any

HEADER = struct.Struct(">Q")
MAX_FRAME = 1 << 31


def _write_frame(fd: int, payload: bytes) -> None:
    view = memoryview(HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("stdin closed before the task arrived")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> bytes:
    (size,) = HEADER.unpack(_read_exactly(fd, HEADER.size))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is too large")
    return _read_exactly(fd, size)


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_child(request: bytes, channel: int) -> None:
    """Run the attempt and send its events and result on `channel` (the real stdout)."""
    import cloudpickle

    from executors.base import TaskResult
    from executors.worker import execute

    message: dict[str, Any] = cloudpickle.loads(request)
    spec = message["spec"]
    for entry in reversed(message.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    lock = threading.Lock()

    def send(obj: Any) -> None:
        payload = cloudpickle.dumps(obj)
        with lock:
            _write_frame(channel, payload)

    def emit(kind: str, data: dict[str, Any]) -> None:
        send(("event", spec.task_id, kind, data))

    result = execute(spec, emit)
    try:
        send(("result", result))
    except Exception as exc:  # an unpicklable error object from user code
        send(("result", TaskResult.failure(spec.task_id, "ResultNotPicklable", str(exc))))


def _watch(child: int) -> int:
    """Wait for the child to end or stdin to close; return the exit code for this process."""
    try:
        pidfd: int | None = os.pidfd_open(child)
    except (AttributeError, OSError):
        pidfd = None
    watched = [0] if pidfd is None else [0, pidfd]
    while True:
        ready, _, _ = select.select(watched, [], [], None if pidfd is not None else 0.05)
        if 0 in ready and not os.read(0, 65536):
            # The executor is gone or asked for a stop: take everything the attempt started with it.
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            return 137
        if 0 in watched and 0 in ready:
            continue
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:
        request = read_frame(0)
    except (EOFError, ValueError) as exc:
        print(f"flowlib remote: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setpgid(0, 0)
            _die_with_parent()
            channel = os.dup(1)
            # Anything printed outside the attempt's capture goes to stderr, never into the protocol.
            os.dup2(2, 1)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            _run_child(request, channel)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    try:
        os.setpgid(pid, pid)  # also here: a kill must find the group even before the child set it
    except OSError:
        pass
    os.close(1)  # only the child speaks on the channel
    sys.exit(_watch(pid))


if __name__ == "__main__":
    main()
