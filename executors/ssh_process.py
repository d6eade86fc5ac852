"""One attempt's remote process on a connected `ssh` host: `python -m executors.remote`.

Start it with the spec on stdin, relay its event frames, and read how it ended;
closing its stdin (or its channel) makes the remote side kill everything the
attempt started (see executors.remote).
"""

from __future__ import annotations

import asyncio
import shlex
import signal
import time
from collections.abc import Callable
from typing import Any

import asyncssh
import cloudpickle

from executors.base import Event, TaskResult, TaskSpec
from executors.remote import HEADER, MAX_FRAME
from executors.ssh_hosts import Host


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def _frame(obj: Any) -> bytes:
    payload = cloudpickle.dumps(obj)
    return HEADER.pack(len(payload)) + payload


async def _drain(reader: Any, keep: int = 1 << 16) -> bytes:
    """Read a stream to its end (a full window would stall the host), keeping its tail."""
    tail = b""
    try:
        while chunk := await reader.read(1 << 16):
            tail = (tail + chunk)[-keep:]
    except (asyncssh.Error, OSError):
        pass  # the connection went; what the stream said until then is all there is
    return tail


class RemoteRun:
    """A started remote attempt: `result()` relays it to its end, `stop()` ends it early."""

    def __init__(self, host: Host, python: str, process: Any) -> None:
        self.host, self.python, self.process = host, python, process
        self.stderr = asyncio.ensure_future(_drain(process.stderr))

    @classmethod
    async def start(cls, host: Host, python: str, spec: TaskSpec, sys_path: list[str]) -> RemoteRun:
        command = f"cd {shlex.quote(host.workdir)} && exec " + shlex.join([python, "-m", "executors.remote"])
        process = await host.conn.create_process(command, encoding=None)
        run = cls(host, python, process)
        process.stdin.write(_frame({"spec": spec, "sys_path": sys_path}))
        return run

    async def result(self, on_event: Callable[[Event], None], task_id: str, started: float) -> TaskResult:
        """Pass the events on until the result arrives; a worker that ended without one is a
        WorkerDied result; a connection that dropped raises ConnectionLost."""
        result = await self._relay(on_event)
        if result is None:
            process = self.process
            await asyncio.wait([asyncio.ensure_future(process.wait_closed()), self.stderr], timeout=5)
            if not self.host.connected():
                raise asyncssh.ConnectionLost("the connection closed before the result arrived")
            tail = self.stderr.result().decode("utf-8", "replace").strip() if self.stderr.done() else ""
            code, number = process.exit_status, None
            how = f"exit code {code}"
            if code is not None and code > 128:  # remote.py exits 128+N when the attempt died of signal N
                number = code - 128
                how = f"killed by {_signal_name(number)}"
            last = tail.splitlines()[-1] if tail else "no output"
            if code == 127 or "No module named 'executors'" in last:
                last += (
                    f" (is [executors.ssh] python = {self.python!r} an interpreter with flowlib installed?)"
                )
            result = TaskResult.failure(
                task_id,
                "WorkerDied",
                f"the remote worker on ssh host {self.host.label} ended without a result ({how}): {last}",
                exit_code=None if number else code,
                signal=number,
                started_at=started,
                log=tail,
            )
        self.stderr.cancel()
        return result

    async def _relay(self, on_event: Callable[[Event], None]) -> TaskResult | None:
        """Pass the remote events on; return the result, or None when the stream ended without one."""
        stdout = self.process.stdout
        while True:
            try:
                (size,) = HEADER.unpack(await stdout.readexactly(HEADER.size))
                if size > MAX_FRAME:
                    raise asyncssh.ProtocolError(f"remote frame of {size} bytes")
                message = cloudpickle.loads(await stdout.readexactly(size))
            except asyncio.IncompleteReadError:
                return None
            if message[0] == "result":
                return message[1]
            _, task_id, kind, data = message
            on_event(Event(task_id, kind, data))

    async def stop(self, within: float = 10.0) -> None:
        """End the attempt and wait until the remote side has killed what it started."""
        process = self.process
        deadline = time.monotonic() + within
        drained = asyncio.ensure_future(_drain(process.stdout))  # a full window must not hold the close up
        try:
            if not process.stdin.is_closing():
                process.stdin.write_eof()  # the remote watcher kills the attempt's process group, then exits
            await asyncio.wait_for(process.wait_closed(), max(0.1, deadline - time.monotonic()))
        except (asyncssh.Error, OSError, asyncio.TimeoutError, BrokenPipeError):
            pass  # the connection is gone: the remote side lost its stdin and does the same
        finally:
            process.close()
            self.stderr.cancel()
            drained.cancel()

    def close(self) -> None:
        self.process.close()
        self.stderr.cancel()
