"""`ssh`: run nodes on the hosts of `[executors.ssh]` over real SSH (asyncssh).

One connection per host, opened on first use and reused by every attempt, all
owned by one asyncio loop in a background thread. Per attempt: ship the
project's code (once per content hash) and the input artifacts the host lacks
to its workdir over SFTP, run `python -m executors.remote` with the pickled spec
on stdin, relay its events, then fetch the outputs back into the local store
(the moving of files is `executors.ssh_transfer`). With a shared (non-local
fsspec) artifact store the host reads and writes it directly.

Placement honours what hosts declare (`[[executors.ssh.host]]`: labels, gpu_type,
gpus, slots): an attempt goes only to a host that has what it asks for, and takes
its GPUs there. A `Distributed(nnodes=N)` attempt takes N hosts at once or waits
(see executors.ssh_gang).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

try:
    import asyncssh
except ImportError as exc:  # the registry reports this message as the reason `ssh` is unavailable
    raise ImportError(f"the ssh executor needs asyncssh ({exc}): pip install 'flowlib[ssh]'") from exc

from executors.base import (
    START_ALLOWANCE_S,
    Event,
    EventSink,
    Executor,
    TaskResult,
    TaskSpec,
    not_begun,
    timed_out,
)
from executors.ssh_gang import run_gang
from executors.ssh_hosts import Host, HostDown, Unusable, describe, open_host, parse_hosts
from executors.ssh_process import RemoteRun
from executors.ssh_transfer import CODE_MAX_BYTES as CODE_MAX_BYTES
from executors.ssh_transfer import CODE_MAX_FILES as CODE_MAX_FILES
from executors.ssh_transfer import MARKER as MARKER
from executors.ssh_transfer import SKIP_DIRS as SKIP_DIRS
from executors.ssh_transfer import ShipError as ShipError
from executors.ssh_transfer import Transfer
from flowlib.errors import ConfigError
from flowlib.resources import Distributed, Resources, lacks, per_node, refusal

log = logging.getLogger("flowlib.executors.ssh")

COOLDOWN_S = 30.0  # a host that failed is tried again only after this, unless no other is left


@dataclass
class _Task:
    spec: TaskSpec
    on_event: EventSink
    future: Future
    tried: dict[str, str] = field(default_factory=dict)  # host label -> why it was skipped
    runner: asyncio.Task | None = None
    kill: tuple[str, str] | None = None
    process: RemoteRun | None = None
    taken: list[tuple[Host, int, list[int]]] = field(default_factory=list)  # host, slots, GPU ids

    def __post_init__(self) -> None:
        self.share = per_node(self.spec.resources, self.spec.distributed)
        self.nnodes = self.spec.distributed.nnodes if self.spec.distributed else 1

    def weight(self, host: Host) -> int:
        return min(host.slots, max(1, math.ceil(self.share.cpus)))


class _Clock:
    """An attempt's timeout on the executor's loop: from the hand-over with room for the remote
    worker to start (START_ALLOWANCE_S), then from the start it reports. Local times only: the
    remote host's clock may differ."""

    def __init__(self, timeout: float, expire: Callable[[str], None]) -> None:
        self.timeout, self.expire, self.loop = timeout, expire, asyncio.get_running_loop()
        self.handle = self.loop.call_later(timeout + START_ALLOWANCE_S, expire, not_begun(timeout))
        self.began = False

    def watching(self, sink: EventSink) -> EventSink:
        def relay(event: Event) -> None:
            if event.kind == "started" and not self.began:
                self.began = True
                self.handle.cancel()
                self.handle = self.loop.call_later(self.timeout, self.expire, timed_out(self.timeout))
            sink(event)

        return relay

    def cancel(self) -> None:
        self.handle.cancel()


def _with_devices(spec: TaskSpec, ids: list[int]) -> TaskSpec:
    if not ids:
        return spec
    return replace(spec, env={**spec.env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, ids))})


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
        slots = settings.get("slots", 2)
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ConfigError(f"[executors.ssh] slots: must be a positive integer, got {slots!r}")
        self._hosts = parse_hosts(settings, slots)
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
        return Resources(cpus=sum(h.slots for h in self._hosts), gpus=sum(h.gpus for h in self._hosts))

    def refuses(self, resources: Resources, distributed: Distributed | None) -> str | None:
        """Why no host (no `nnodes` distinct hosts) could ever hold the attempt, by what each declares."""
        return refusal([h.machine() for h in self._hosts], resources, distributed, "ssh hosts")

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
        if self._loop is None or self._closing or self._loop.is_closed():
            future.set_result(
                TaskResult.failure(task.task_id, "Cancelled", "the ssh executor is not running")
            )
            return future
        self._loop.call_soon_threadsafe(self._enqueue, _Task(task, on_event, future))
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
        """Place every queued attempt that hosts have room for; a group takes all its hosts at once."""
        held: set[str] = set()  # hosts a waiting group needs: later attempts may not take them first
        for task in list(self._queue):
            hosts = self._place(task, held)
            if hosts is None:
                if task.nnodes > 1 and task in self._queue:
                    held.update(h.label for h in self._hosts if lacks(h.machine(), task.share) is None)
                continue
            self._queue.remove(task)
            for host in hosts:
                weight, ids = task.weight(host), host.free_gpus[: task.share.gpus]
                del host.free_gpus[: task.share.gpus]
                host.busy += weight
                task.taken.append((host, weight, ids))
            task.runner = asyncio.get_running_loop().create_task(self._attempt(task))

    def _place(self, task: _Task, held: set[str]) -> list[Host] | None:
        """The hosts to run `task` on now; None while it waits (or when it failed: none ever could)."""
        untried = [h for h in self._hosts if h.label not in task.tried and h.refused is None]
        able = [h for h in untried if lacks(h.machine(), task.share) is None]
        if len(able) < task.nnodes:
            self._queue.remove(task)
            self._finish(task, self._unplaceable(task))
            return None
        now = time.monotonic()
        up = [h for h in able if h.down_until <= now]
        pool = up if len(up) >= task.nnodes else able
        free = [
            h
            for h in pool
            if h.label not in held
            and h.busy + task.weight(h) <= h.slots
            and len(h.free_gpus) >= task.share.gpus
        ]
        if len(free) < task.nnodes:
            return None
        chosen = sorted(free, key=lambda h: h.slots - h.busy, reverse=True)[: task.nnodes]
        return sorted(chosen, key=self._hosts.index)  # node ranks follow the configured order

    def _unplaceable(self, task: _Task) -> tuple[str, str]:
        spec = task.spec
        never = refusal([h.machine() for h in self._hosts], spec.resources, spec.distributed, "ssh hosts")
        if never is not None:
            return ("Unschedulable", f"the attempt {never}")
        able = [h for h in self._hosts if lacks(h.machine(), task.share) is None]
        reasons = [task.tried.get(h.label) or h.refused or h.reason for h in able]
        kind = "HostKeyMismatch" if all(h.refused for h in able) else "HostUnreachable"
        if len(reasons) == 1:
            return (kind, reasons[0])
        return (kind, "no ssh host could run the attempt: " + "; ".join(reasons))

    def _mark_down(self, host: Host, reason: str) -> None:
        if host.down_until <= time.monotonic():
            log.warning("%s; placing attempts on other hosts for %g s", reason, COOLDOWN_S)
        host.reason, host.down_until = reason, time.monotonic() + COOLDOWN_S
        if host.conn is not None:
            host.conn.close()
        host.conn = host.sftp = None

    async def _attempt(self, task: _Task) -> None:
        hosts = [host for host, _, _ in task.taken]
        outcome: TaskResult | tuple[str, str] | None = None
        requeue = False
        timer = None
        try:
            connected = await asyncio.gather(*(self._connect(h) for h in hosts), return_exceptions=True)
            for host, done in zip(hosts, connected, strict=True):
                if isinstance(done, Unusable):
                    task.tried[host.label] = str(done)
                    requeue = True
                elif isinstance(done, BaseException):
                    raise done
            if requeue:
                return
            on_event = task.on_event
            if task.spec.timeout:
                timer = _Clock(
                    task.spec.timeout, lambda why, _id=task.spec.task_id: self._kill(_id, "Timeout", why)
                )
                on_event = timer.watching(on_event)
            if task.nnodes > 1:
                placed = [(host, ids) for host, _, ids in task.taken]
                outcome = await run_gang(
                    task.spec, placed, on_event, self._transfer, self._python, self._mark_down
                )
            else:
                outcome = await self._run(task, hosts[0], on_event)
        except asyncio.CancelledError:
            outcome = task.kill or ("Cancelled", "the executor shut down")
        except (asyncssh.Error, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            dropped = [h for h in hosts if not h.connected()]
            if dropped:
                outcome = (
                    "HostDropped",
                    f"ssh host {dropped[0].label} dropped during the attempt: {describe(exc)}",
                )
                for host in dropped:
                    self._mark_down(host, f"ssh host {host.label} dropped")
            else:
                outcome = ("SshError", f"ssh host {hosts[0].label}: {describe(exc)}")
        except Exception as exc:  # the local store, a corrupt fetch, code too big to ship
            outcome = (type(exc).__name__, f"ssh host {hosts[0].label}: {describe(exc)}")
        finally:
            if timer is not None:
                timer.cancel()
            for host, weight, ids in task.taken:
                host.busy -= weight
                host.free_gpus = sorted(host.free_gpus + ids)
            task.taken = []
            if task.process is not None:
                task.process.close()
                task.process = None
            if requeue and self._closing:
                outcome = ("Cancelled", "the executor shut down")
            if requeue and not self._closing:
                self._queue.appendleft(task)
            elif outcome is not None:
                self._finish(task, outcome, hosts[0] if len(hosts) == 1 else None)
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
    async def _run(self, task: _Task, host: Host, on_event: EventSink) -> TaskResult:
        spec, started = _with_devices(task.spec, task.taken[0][2]), time.time()
        remote_spec, sys_path = await self._transfer.ship(host, spec)
        task.process = await RemoteRun.start(host, self._python, remote_spec, sys_path)
        result = await task.process.result(on_event, spec.task_id, started)
        await self._transfer.fetch(host, spec, result)
        if task.tried:
            notes = "".join(f"flowlib: {why}; ran on ssh host {host.label}\n" for why in task.tried.values())
            result.log = notes + result.log
        result.host = host.label
        return result
