"""`ssh`: run nodes on the hosts of `[executors.ssh]` over real SSH (asyncssh).

One connection per host, opened on first use and reused by every attempt, all
owned by one asyncio loop in a background thread. Per attempt: ship the
project's code (once per content hash) and the input artifacts the host lacks
to its workdir over SFTP, run `python -m executors.remote` with the pickled spec
on stdin, relay its events, then fetch the outputs back into the local store
(the moving of files is `executors.ssh_transfer`). With a shared (non-local
fsspec) artifact store the host reads and writes it directly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shlex
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

try:
    import asyncssh
except ImportError as exc:  # the registry reports this message as the reason `ssh` is unavailable
    raise ImportError(f"the ssh executor needs asyncssh ({exc}): pip install 'flowlib[ssh]'") from exc

from executors.base import Event, EventSink, Executor, TaskResult, TaskSpec
from executors.remote import HEADER, MAX_FRAME
from executors.ssh_hosts import Host, HostDown, Unusable, describe, open_host, parse_host
from executors.ssh_transfer import CODE_MAX_BYTES as CODE_MAX_BYTES
from executors.ssh_transfer import CODE_MAX_FILES as CODE_MAX_FILES
from executors.ssh_transfer import MARKER as MARKER
from executors.ssh_transfer import SKIP_DIRS as SKIP_DIRS
from executors.ssh_transfer import ShipError as ShipError
from executors.ssh_transfer import Transfer
from flowlib.errors import ConfigError
from flowlib.resources import Resources

log = logging.getLogger("flowlib.executors.ssh")

COOLDOWN_S = 30.0  # a host that failed is tried again only after this, unless no other is left


@dataclass
class _Task:
    spec: TaskSpec
    on_event: EventSink
    future: Future
    weight: int
    tried: dict[str, str] = field(default_factory=dict)  # host label -> why it was skipped
    runner: asyncio.Task | None = None
    kill: tuple[str, str] | None = None
    process: Any = None


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def _frame(obj: Any) -> bytes:
    payload = cloudpickle.dumps(obj)
    return HEADER.pack(len(payload)) + payload


class SshExecutor(Executor):
    name = "ssh"

    def __init__(self) -> None:
        self._hosts: list[Host] = []
        self._queue: deque[_Task] = deque()
        self._tasks: dict[str, _Task] = {}
        self._transfer = Transfer()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------
    def start(self, settings: Mapping[str, Any]) -> None:
        hosts, slots = settings.get("hosts"), settings.get("slots", 2)
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
            raise ConfigError(
                '[executors.ssh] hosts: list the hosts to run on, e.g. hosts = ["user@host:22"]'
            )
        if not isinstance(slots, int) or slots < 1:
            raise ConfigError(f"[executors.ssh] slots: must be a positive integer, got {slots!r}")
        self._hosts = [parse_host(entry, slots) for entry in hosts]
        self._known_hosts = os.path.expanduser(settings.get("known_hosts") or "~/.ssh/known_hosts")
        if not os.path.isfile(self._known_hosts):
            raise ConfigError(
                f"[executors.ssh] known_hosts: {self._known_hosts} does not exist; host keys are always "
                "verified, so list each host's key there (as ssh does after its first connection)"
            )
        identity = settings.get("identity_file")
        self._identity = os.path.expanduser(identity) if identity else None
        if self._identity:
            try:
                asyncssh.read_private_key(self._identity)
            except (OSError, asyncssh.KeyImportError) as exc:
                raise ConfigError(
                    f"[executors.ssh] identity_file: cannot use {self._identity}: {exc}"
                ) from None
        self._python = settings.get("python") or "python3"
        self._workdir = settings.get("workdir") or "~/.flow-remote"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="flowlib-ssh", daemon=True)
        self._thread.start()

    def capacity(self) -> Resources:
        return Resources(cpus=sum(h.slots for h in self._hosts), gpus=0)

    def shutdown(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=20)
        except Exception as exc:
            log.warning("ssh executor: shutdown was not clean: %s", describe(exc))
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not loop.is_running():
            loop.close()

    async def _close(self) -> None:
        self._closing = True
        while self._queue:
            self._finish(self._queue.popleft(), ("Cancelled", "the executor shut down"))
        runners = [t.runner for t in self._tasks.values() if t.runner and not t.runner.done()]
        for task in self._tasks.values():
            if task.runner and not task.runner.done():
                task.kill = task.kill or ("Cancelled", "the executor shut down")
                task.runner.cancel()
        if runners:
            await asyncio.wait(runners, timeout=10)
        for host in self._hosts:
            if host.connecting and not host.connecting.done():
                host.connecting.cancel()
            if host.conn is not None:
                host.conn.close()
                await asyncio.wait([asyncio.ensure_future(host.conn.wait_closed())], timeout=5)
                host.conn = None

    # -- tasks ------------------------------------------------------------------------
    def submit(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        future: Future[TaskResult] = Future()
        slots = max((h.slots for h in self._hosts), default=1)
        weight = min(slots, max(1, math.ceil(task.resources.cpus)))
        if self._loop is None or self._closing or self._loop.is_closed():
            future.set_result(
                TaskResult.failure(task.task_id, "Cancelled", "the ssh executor is not running")
            )
            return future
        self._loop.call_soon_threadsafe(self._enqueue, _Task(task, on_event, future, weight))
        return future

    def cancel(self, task_id: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._kill, task_id, "Cancelled", "cancelled while running")

    def _enqueue(self, task: _Task) -> None:
        self._tasks[task.spec.task_id] = task
        self._queue.append(task)
        self._pump()

    def _kill(self, task_id: str, kind: str, message: str) -> None:
        task = self._tasks.get(task_id)
        if task is None or task.future.done():
            return
        if task in self._queue:
            self._queue.remove(task)
            self._finish(task, (kind, "cancelled before it started" if kind == "Cancelled" else message))
        elif task.kill is None and task.runner is not None:
            task.kill = (kind, message)
            task.runner.cancel()  # closing the channel makes the remote side kill the attempt

    def _finish(self, task: _Task, outcome: TaskResult | tuple[str, str], host: Host | None = None) -> None:
        self._tasks.pop(task.spec.task_id, None)
        if isinstance(outcome, tuple):
            outcome = TaskResult.failure(task.spec.task_id, *outcome, host=host.label if host else None)
        if not task.future.done():
            task.future.set_result(outcome)

    def _pump(self) -> None:
        """Place every queued attempt that a host has a free slot for."""
        for task in list(self._queue):
            host = self._place(task)
            if host is not None:
                self._queue.remove(task)
                host.busy += task.weight
                task.runner = asyncio.get_running_loop().create_task(self._attempt(task, host))

    def _place(self, task: _Task) -> Host | None:
        untried = [h for h in self._hosts if h.label not in task.tried and h.refused is None]
        if not untried:
            self._queue.remove(task)
            reasons = [task.tried.get(h.label) or h.refused or h.reason for h in self._hosts]
            kind = "HostKeyMismatch" if all(h.refused for h in self._hosts) else "HostUnreachable"
            message = (
                reasons[0]
                if len(reasons) == 1
                else "no ssh host could run the attempt: " + "; ".join(reasons)
            )
            self._finish(task, (kind, message))
            return None
        now = time.monotonic()
        pool = [h for h in untried if h.down_until <= now] or untried
        free = [h for h in pool if h.busy + min(task.weight, h.slots) <= h.slots]
        return max(free, key=lambda h: h.slots - h.busy) if free else None

    def _mark_down(self, host: Host, reason: str) -> None:
        if host.down_until <= time.monotonic():
            log.warning("%s; placing attempts on other hosts for %g s", reason, COOLDOWN_S)
        host.reason, host.down_until = reason, time.monotonic() + COOLDOWN_S
        if host.conn is not None:
            host.conn.close()
        host.conn = host.sftp = None

    async def _attempt(self, task: _Task, host: Host) -> None:
        outcome: TaskResult | tuple[str, str] | None = None
        requeue = False
        try:
            try:
                await self._connect(host)
            except Unusable as exc:
                task.tried[host.label] = str(exc)
                requeue = True
                return
            outcome = await self._run(task, host)
        except asyncio.CancelledError:
            outcome = task.kill or ("Cancelled", "the executor shut down")
        except (asyncssh.Error, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            if host.connected():
                outcome = ("SshError", f"ssh host {host.label}: {describe(exc)}")
            else:
                outcome = (
                    "HostDropped",
                    f"ssh host {host.label} dropped during the attempt: {describe(exc)}",
                )
                self._mark_down(host, f"ssh host {host.label} dropped")
        except Exception as exc:  # the local store, a corrupt fetch, code too big to ship
            outcome = (type(exc).__name__, f"ssh host {host.label}: {describe(exc)}")
        finally:
            host.busy -= task.weight
            if task.process is not None:
                task.process.close()
                task.process = None
            if requeue and self._closing:
                outcome = ("Cancelled", "the executor shut down")
            if requeue and not self._closing:
                self._queue.appendleft(task)
            elif outcome is not None:
                self._finish(task, outcome, host)
            if not self._closing:
                self._pump()

    # -- connections --------------------------------------------------------------------
    async def _connect(self, host: Host) -> None:
        if host.refused:
            raise Unusable(host.refused)
        if host.connected():
            return
        if host.connecting is None or host.connecting.done():
            host.connecting = asyncio.get_running_loop().create_task(self._open(host))
        await asyncio.shield(host.connecting)

    async def _open(self, host: Host) -> None:
        try:
            await open_host(host, self._identity, self._known_hosts, self._workdir)
        except HostDown as exc:
            self._mark_down(host, str(exc))
            raise Unusable(str(exc)) from None

    # -- one attempt on a connected host ------------------------------------------------
    async def _run(self, task: _Task, host: Host) -> TaskResult:
        spec, started = task.spec, time.time()
        remote_spec, sys_path = await self._transfer.ship(host, spec)
        command = f"cd {shlex.quote(host.workdir)} && exec " + shlex.join(
            [self._python, "-m", "executors.remote"]
        )
        process = task.process = await host.conn.create_process(command, encoding=None)
        timer = None
        if spec.timeout:
            message = f"timed out after {spec.timeout:g} s and was killed"
            timer = asyncio.get_running_loop().call_later(
                spec.timeout, self._kill, spec.task_id, "Timeout", message
            )
        stderr = asyncio.ensure_future(self._drain(process.stderr))
        try:
            process.stdin.write(_frame({"spec": remote_spec, "sys_path": sys_path}))
            result = await self._relay(task, process)
        finally:
            if timer is not None:
                timer.cancel()
        if result is None:
            await asyncio.wait([asyncio.ensure_future(process.wait_closed()), stderr], timeout=5)
            if not host.connected():
                raise asyncssh.ConnectionLost("the connection closed before the result arrived")
            tail = stderr.result().decode("utf-8", "replace").strip() if stderr.done() else ""
            code, number = process.exit_status, None
            how = f"exit code {code}"
            if code is not None and code > 128:  # remote.py exits 128+N when the attempt died of signal N
                number = code - 128
                how = f"killed by {_signal_name(number)}"
            last = tail.splitlines()[-1] if tail else "no output"
            if code == 127 or "No module named 'executors'" in last:
                last += (
                    f" (is [executors.ssh] python = {self._python!r} an interpreter with flowlib installed?)"
                )
            result = TaskResult.failure(
                spec.task_id,
                "WorkerDied",
                f"the remote worker on ssh host {host.label} ended without a result ({how}): {last}",
                exit_code=None if number else code,
                signal=number,
                started_at=started,
                log=tail,
            )
        stderr.cancel()
        await self._transfer.fetch(host, spec, result)
        if task.tried:
            notes = "".join(f"flowlib: {why}; ran on ssh host {host.label}\n" for why in task.tried.values())
            result.log = notes + result.log
        result.host = host.label
        return result

    @staticmethod
    async def _drain(reader: Any, keep: int = 1 << 16) -> bytes:
        """Read a stream to its end (a full window would stall the host), keeping its tail."""
        tail = b""
        try:
            while chunk := await reader.read(1 << 16):
                tail = (tail + chunk)[-keep:]
        except (asyncssh.Error, OSError):
            pass  # the connection went; what the stream said until then is all there is
        return tail

    async def _relay(self, task: _Task, process: Any) -> TaskResult | None:
        """Pass the remote events on; return the result, or None when the stream ended without one."""
        while True:
            try:
                (size,) = HEADER.unpack(await process.stdout.readexactly(HEADER.size))
                if size > MAX_FRAME:
                    raise asyncssh.ProtocolError(f"remote frame of {size} bytes")
                message = cloudpickle.loads(await process.stdout.readexactly(size))
            except asyncio.IncompleteReadError:
                return None
            if message[0] == "result":
                return message[1]
            _, task_id, kind, data = message
            task.on_event(Event(task_id, kind, data))
