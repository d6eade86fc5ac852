"""`ssh`: run nodes on the hosts of `[executors.ssh]` over real SSH (asyncssh).

One connection per host, opened on first use and reused by every attempt, all
owned by one asyncio loop in a background thread. Per attempt: ship the
project's code (once per content hash) and the input artifacts the host lacks
to its workdir over SFTP, run `python -m executors.remote` with the pickled spec
on stdin, relay its events, then fetch the outputs back into the local store.
With a shared (non-local fsspec) artifact store the host reads and writes it directly.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import logging
import math
import os
import posixpath
import secrets
import shlex
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import cloudpickle

try:
    import asyncssh
except ImportError as exc:  # the registry reports this message as the reason `ssh` is unavailable
    raise ImportError(f"the ssh executor needs asyncssh ({exc}): pip install 'flowlib[ssh]'") from exc

from executors.base import Event, EventSink, Executor, TaskResult, TaskSpec
from executors.remote import HEADER, MAX_FRAME
from flowlib.errors import ConfigError
from flowlib.resources import Resources
from flowlib.store import ArtifactStore

log = logging.getLogger("flowlib.executors.ssh")

COOLDOWN_S = 30.0  # a host that failed is tried again only after this, unless no other is left
CONNECT_TIMEOUT_S = 15.0
CODE_MAX_FILES, CODE_MAX_BYTES = 5000, 32 << 20
MARKER = ".flowlib-workdir"
SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv", "build", "dist"}


class _Unusable(Exception):
    """A host could not be used for an attempt before anything ran there."""


class ShipError(Exception):
    """Code or artifacts could not be moved between this machine and a host."""


@dataclass
class _Host:
    label: str
    user: str
    hostname: str
    port: int
    slots: int
    busy: int = 0
    conn: Any = None
    sftp: Any = None
    workdir: str = ""
    connecting: asyncio.Task | None = None
    down_until: float = 0.0
    reason: str = ""
    refused: str | None = None  # a host-key mismatch: never used again by this executor
    have: set[str] = field(default_factory=set)  # keys of files known to be on the host

    def connected(self) -> bool:
        return self.conn is not None and not self.conn.is_closed()


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


def parse_host(entry: str, slots: int) -> _Host:
    """Parse "user@host:port" ("[v6addr]:port" too); no user means the current one, no port 22."""
    user, _, rest = entry.rpartition("@")
    host, port = rest, "22"
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else port
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"[executors.ssh] hosts: {entry!r} is not user@host[:port]")
    label = host if port == "22" else f"{host}:{port}"
    return _Host(label, user or getpass.getuser(), host, int(port), slots)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def _shared_store(url: str) -> bool:
    return "://" in url and not url.startswith(("file://", "memory://"))


def _frame(obj: Any) -> bytes:
    payload = cloudpickle.dumps(obj)
    return HEADER.pack(len(payload)) + payload


def _input_digests(spec: TaskSpec) -> list[tuple[str, Mapping[str, bytes]]]:
    """(digest, the input's inline bytes by digest) for every artifact input of `spec`."""
    found = []
    for value in spec.inputs.values():
        inline = value.get("inline") or {}
        digests = [value["digest"]] if "digest" in value else list(value.get("fields", {}).values())
        found.extend((digest, inline) for digest in digests)
    return found


def _manifest_digests(data: bytes) -> list[str]:
    """The element digests of a list manifest artifact's bytes; [] for any other artifact."""
    if not data.startswith(b"FLOW1 manifest "):
        return []
    return [str(entry[0]) for entry in json.loads(data.partition(b"\n")[2])]


def _project_files(spec: TaskSpec) -> tuple[str | None, list[tuple[str, bytes]]]:
    """Return (code root, [(relative path, bytes)]) of the .py files a remote attempt needs."""
    op_file = os.path.abspath(spec.operator.file)
    root = os.path.abspath(spec.project_root) if spec.project_root else None
    if root is None or not op_file.startswith(root + os.sep):
        root = os.path.dirname(op_file) if os.path.isfile(op_file) else root
    if root is None or not os.path.isdir(root):
        return None, []
    files, total = [], 0
    for folder, dirs, names in os.walk(root):
        # A host's workdir may sit inside the project when the host is this machine: never ship it.
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in SKIP_DIRS
            and not os.path.exists(os.path.join(folder, d, MARKER))
        )
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.endswith(".py") or path == op_file:
                with open(path, "rb") as f:
                    data = f.read()
                total += len(data)
                files.append((os.path.relpath(path, root).replace(os.sep, "/"), data))
        if len(files) > CODE_MAX_FILES or total > CODE_MAX_BYTES:
            raise ShipError(
                f"the project at {root} holds more than {CODE_MAX_FILES} .py files or "
                f"{CODE_MAX_BYTES >> 20} MiB of them, too much to ship to ssh hosts"
            )
    return root, files


class SshExecutor(Executor):
    name = "ssh"

    def __init__(self) -> None:
        self._hosts: list[_Host] = []
        self._queue: deque[_Task] = deque()
        self._tasks: dict[str, _Task] = {}
        self._stores: dict[tuple[str, bool], ArtifactStore] = {}
        self._code: dict[tuple[str, str], tuple[str | None, list[tuple[str, bytes]], str]] = {}
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
            log.warning("ssh executor: shutdown was not clean: %s", _describe(exc))
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

    def _finish(self, task: _Task, outcome: TaskResult | tuple[str, str], host: _Host | None = None) -> None:
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

    def _place(self, task: _Task) -> _Host | None:
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

    def _mark_down(self, host: _Host, reason: str) -> None:
        if host.down_until <= time.monotonic():
            log.warning("%s; placing attempts on other hosts for %g s", reason, COOLDOWN_S)
        host.reason, host.down_until = reason, time.monotonic() + COOLDOWN_S
        if host.conn is not None:
            host.conn.close()
        host.conn = host.sftp = None

    async def _attempt(self, task: _Task, host: _Host) -> None:
        outcome: TaskResult | tuple[str, str] | None = None
        requeue = False
        try:
            try:
                await self._connect(host)
            except _Unusable as exc:
                task.tried[host.label] = str(exc)
                requeue = True
                return
            outcome = await self._run(task, host)
        except asyncio.CancelledError:
            outcome = task.kill or ("Cancelled", "the executor shut down")
        except (asyncssh.Error, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            if host.connected():
                outcome = ("SshError", f"ssh host {host.label}: {_describe(exc)}")
            else:
                outcome = (
                    "HostDropped",
                    f"ssh host {host.label} dropped during the attempt: {_describe(exc)}",
                )
                self._mark_down(host, f"ssh host {host.label} dropped")
        except Exception as exc:  # the local store, a corrupt fetch, code too big to ship
            outcome = (type(exc).__name__, f"ssh host {host.label}: {_describe(exc)}")
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
    async def _connect(self, host: _Host) -> None:
        if host.refused:
            raise _Unusable(host.refused)
        if host.connected():
            return
        if host.connecting is None or host.connecting.done():
            host.connecting = asyncio.get_running_loop().create_task(self._open(host))
        await asyncio.shield(host.connecting)

    async def _open(self, host: _Host) -> None:
        keys: dict[str, Any] = {"client_keys": [self._identity], "agent_path": None} if self._identity else {}
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    host.hostname,
                    host.port,
                    username=host.user,
                    known_hosts=self._known_hosts,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    keepalive_interval=15,
                    keepalive_count_max=3,
                    **keys,
                ),
                CONNECT_TIMEOUT_S + 5,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            host.refused = (
                f"ssh host {host.label} refused: its host key does not match the known_hosts file "
                f"{self._known_hosts} ({_describe(exc)}); not retried on this host"
            )
            log.warning("%s", host.refused)
            raise _Unusable(host.refused) from None
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            reason = f"ssh host {host.label} cannot be reached ({_describe(exc)})"
            self._mark_down(host, reason)
            raise _Unusable(reason) from None
        try:
            sftp = await conn.start_sftp_client()
            workdir = self._workdir
            if workdir == "~" or workdir.startswith("~/") or not workdir.startswith("/"):
                home = await sftp.realpath(".")
                workdir = posixpath.join(
                    home, workdir[2:] if workdir.startswith("~/") else workdir.lstrip("~")
                )
            await sftp.makedirs(workdir, exist_ok=True)
            async with sftp.open(posixpath.join(workdir, MARKER), "wb") as f:
                await f.write(b"a flowlib ssh executor workdir\n")
        except (OSError, asyncssh.Error) as exc:
            conn.close()
            reason = f"ssh host {host.label}: cannot use workdir {self._workdir!r} ({_describe(exc)})"
            self._mark_down(host, reason)
            raise _Unusable(reason) from None
        host.conn, host.sftp, host.workdir = conn, sftp, workdir.rstrip("/") or "/"
        host.down_until, host.have = 0.0, set()

    # -- one attempt on a connected host ------------------------------------------------
    async def _run(self, task: _Task, host: _Host) -> TaskResult:
        spec, started = task.spec, time.time()
        remote_spec, sys_path = await self._ship(host, spec)
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
        await self._fetch(host, spec, result)
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

    # -- shipping code and artifacts -----------------------------------------------------
    def _store(self, spec: TaskSpec) -> ArtifactStore:
        key = (spec.store_url, spec.fsync)
        if key not in self._stores:
            self._stores[key] = ArtifactStore(spec.store_url, fsync=spec.fsync)
        return self._stores[key]

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _put(self, host: _Host, path: str, data: bytes) -> None:
        """Write a remote file under a temporary name and rename it into place."""
        folder = posixpath.dirname(path)
        if "dir:" + folder not in host.have:
            await host.sftp.makedirs(folder, exist_ok=True)
            host.have.add("dir:" + folder)
        tmp = f"{folder}/.tmp-{secrets.token_hex(8)}"
        async with host.sftp.open(tmp, "wb") as f:
            await f.write(data)
        await host.sftp.posix_rename(tmp, path)

    async def _ship(self, host: _Host, spec: TaskSpec) -> tuple[TaskSpec, list[str]]:
        key = (spec.project_root, spec.operator.file)
        if key not in self._code:
            root, files = await self._blocking(_project_files, spec)
            h = hashlib.sha256()
            for rel, data in files:
                h.update(b"%d:%s%d:" % (len(rel.encode()), rel.encode(), len(data)) + data)
            digest = h.hexdigest()[:24]
            self._code[key] = (root, files, digest)
        root, files, digest = self._code[key]
        code_dir = f"{host.workdir}/code/{digest}"

        # Concurrent first attempts may both upload: harmless, every file lands by an atomic rename.
        if digest not in host.have and not await host.sftp.exists(f"{code_dir}/.complete"):
            await asyncio.gather(*(self._put(host, f"{code_dir}/{rel}", data) for rel, data in files))
            await self._put(host, f"{code_dir}/.complete", b"")
        host.have.add(digest)
        operator, sys_path = spec.operator, [code_dir] if root else []
        if root and os.path.abspath(operator.file).startswith(root + os.sep):
            remote_file = posixpath.join(code_dir, os.path.relpath(os.path.abspath(operator.file), root))
            operator = replace(operator, file=remote_file.replace(os.sep, "/"))
        if _shared_store(spec.store_url):
            return replace(spec, operator=operator, project_root=code_dir if root else ""), sys_path
        store, remote_store = self._store(spec), f"{host.workdir}/artifacts"
        ref = await self._blocking(store.get_ref, spec.checkpoint_ref) if spec.checkpoint_ref else None
        wanted = [*_input_digests(spec), *([(ref, {})] if ref else [])]
        await asyncio.gather(*(self._send_artifact(host, store, digest, inline) for digest, inline in wanted))
        if ref:
            await self._put(host, f"{remote_store}/refs/{spec.checkpoint_ref}", ref.encode() + b"\n")
        remote = replace(
            spec, operator=operator, store_url=remote_store, project_root=code_dir if root else ""
        )
        return remote, sys_path

    async def _send_artifact(
        self, host: _Host, store: ArtifactStore, digest: str, inline: Mapping[str, bytes]
    ) -> None:
        """Copy an artifact (and a list's elements) unless the host has it or it travels inline."""
        if digest in host.have:
            return  # there with all its elements
        data = inline.get(digest)
        if data is None:
            data = await self._blocking(store.read_verified, digest)
            path = f"{host.workdir}/artifacts/objects/{digest[:2]}/{digest}"
            if not await host.sftp.exists(path):
                await self._put(host, path, data)
        elements = _manifest_digests(data)
        await asyncio.gather(*(self._send_artifact(host, store, d, inline) for d in elements))
        if digest not in inline:
            host.have.add(digest)

    async def _fetch(self, host: _Host, spec: TaskSpec, result: TaskResult) -> None:
        """Bring outputs (and a newer checkpoint) back into the local store."""
        if _shared_store(spec.store_url):
            return
        store, remote_store = self._store(spec), f"{host.workdir}/artifacts"
        wanted = [
            digest
            for out in result.outputs.values()
            for digest in [out["digest"], *out.get("elements", [])]
            if digest not in (out.get("inline") or {})
        ]
        if spec.checkpoint_ref:
            try:
                async with host.sftp.open(f"{remote_store}/refs/{spec.checkpoint_ref}", "rb") as f:
                    ref = (await f.read()).decode("ascii", "replace").strip()
            except asyncssh.SFTPNoSuchFile:
                ref = None
            if ref and ref != await self._blocking(store.get_ref, spec.checkpoint_ref):
                wanted.append(ref)
        else:
            ref = None
        await asyncio.gather(*(self._fetch_artifact(host, store, d) for d in wanted))
        if ref:
            await self._blocking(store.set_ref, spec.checkpoint_ref, ref)

    async def _fetch_artifact(self, host: _Host, store: ArtifactStore, digest: str) -> None:
        if await self._blocking(store.exists, digest):
            return
        async with host.sftp.open(f"{host.workdir}/artifacts/objects/{digest[:2]}/{digest}", "rb") as f:
            data: bytes = await f.read()
        header, _, payload = data.partition(b"\n")
        parts = header.split(b" ")
        if len(parts) != 3 or not parts[2].isdigit() or hashlib.sha256(data).hexdigest() != digest:
            raise ShipError(f"artifact {digest} fetched from the host is corrupt")
        await self._blocking(store.put_bytes, parts[1].decode(), int(parts[2]), payload)
        host.have.add(digest)
