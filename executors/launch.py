"""How the local pool starts a worker process: forked from a warm template, or a fresh interpreter.

A fresh interpreter (`python -m executors.worker FD`, not multiprocessing's spawn, which
would re-run the user's main script) imports the run's pipelines as it starts. A warm
start asks the pool's template process (executors.template), which imported them once,
to fork the worker instead. Both kinds of worker lead their own process group and die
with the scheduler; the pool sees either through the same small interface (`alive`,
`kill_group`, `wait`, `pid`).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Collection, Mapping, Sequence

from executors import early
from executors.capture import LOG_PATH_ENV
from executors.channel import Channel
from executors.pool_worker import PoolWorker, WorkerProcess
from executors.template import NVML_CHECK, PACKET, UNSET, WARM, send
from executors.worker import THREAD_VARIABLES, USER_THREADS
from flowlib.loading import LOADED

FORK, SPAWN = "fork", "spawn"  # [executors.local] start: warm workers forked from a template, or fresh ones

log = logging.getLogger("flowlib.executors.local")


# -- the pool's side -----------------------------------------------------------------------------
class Forked:
    """A worker the template forked, or is about to fork: what the pool needs of its process."""

    def __init__(self, template: Template) -> None:
        self._template = template
        self.pid: int | None = None
        self.started: bool | None = None  # None until the template answered; False: it never will
        self._code: int | None = None
        self._ended = threading.Event()
        self._kill = False  # killed before its pid was known: kill it once it is
        self._reaped = False

    def alive(self) -> bool:
        return not self._ended.is_set()

    def kill_group(self) -> None:
        """Kill the worker and everything in its process group."""
        with self._template.lock:
            if self.started is None:
                self._kill = True
            elif self.started and self.pid and not self._reaped and not self._template.gone:
                # until reaped (the template keeps it a zombie) its pid and group id cannot be reused
                _kill(self.pid)

    def signal(self, signum: int) -> bool:
        """Send the worker itself `signum`; False when it cannot be (not forked yet, or gone)."""
        with self._template.lock:
            if not (self.started and self.pid and not self._reaped and not self._template.gone):
                return False
            return _signal(self.pid, signum)

    def wait(self, timeout: float | None = None) -> int | None:
        """Its returncode (None when the template could not say) once it ended; then it is reaped."""
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired("executors.worker", timeout or 0)
        with self._template.lock:
            if self.started and not self._reaped:
                self._reaped = True
                self._template.ask(("reap", self.pid))
        return self._code

    # what the template reported (its reader thread, with the template's lock held)
    def forked(self, pid: int) -> None:
        self.pid, self.started = pid, True
        if self._kill:
            _kill(pid)

    def ended(self, code: int | None, *, started: bool = True) -> None:
        if self.started is None:
            self.started = started
        self._code = code
        self._ended.set()


def _kill(pid: int) -> None:
    for kill in (os.killpg, os.kill):  # the group, or the child itself before its setsid()
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Template:
    """A running template process, seen from the pool: ask it for workers, learn how they ended."""

    def __init__(self, env: Mapping[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "executors.template", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self.lock = threading.Lock()
        self.problem: str | None = None  # why it forks no more workers
        self._control = ours
        self._requests = itertools.count()
        self._pending: dict[int, Forked] = {}  # request -> its worker, until forked
        self._children: dict[int, Forked] = {}  # pid -> its worker, until it ended
        self._closing = False
        self._ready = False  # its imports are done
        self.gone = False  # it has exited: its workers' pids may belong to others now
        self._reader = threading.Thread(target=self._read, name="flowlib-template", daemon=True)
        self._reader.start()

    def fork(self, sock: socket.socket, env: Mapping[str, str], fds: Sequence[int] = ()) -> Forked | None:
        """Ask for a worker serving the pool on `sock` (its other end), with `env` added to its
        environment and `fds` held open; None when the template forks no more."""
        with self.lock:
            if self.problem is not None or self._closing:
                return None
            request = next(self._requests)
            worker = self._pending[request] = Forked(self)
            if not self.ask(("fork", request, dict(env), _pipelines()), [sock.fileno(), *fds]):
                del self._pending[request]
                return None
        return worker

    def ask(self, message: tuple, fds: Sequence[int] = ()) -> bool:
        try:
            send(self._control, message, fds)
            return True
        except OSError as exc:
            self._fail(f"the worker template stopped answering ({exc})")
            return False

    def close(self) -> None:
        """End the template: it kills the workers it still has; one still importing is killed."""
        with self.lock:
            self._closing = True
            importing = not self._ready
        if importing:
            _kill(self.process.pid)  # it has forked nothing yet, and its imports may take seconds
        try:
            self._control.shutdown(socket.SHUT_RDWR)  # wakes the reader; the template reads EOF
        except OSError:
            pass
        self._reader.join(timeout=5)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill(self.process.pid)
            self.process.wait()
        self._control.close()

    def _read(self) -> None:
        while True:
            try:
                data = self._control.recv(PACKET)
            except ConnectionResetError:
                continue  # it exited with requests unread: said once, then what it sent still comes
            except OSError:
                data = b""
            if not data:
                break
            message = pickle.loads(data)
            with self.lock:
                self._take(message)
        with self.lock:
            self.gone = True
            self._fail("the worker template exited")
            for worker in self._pending.values():
                worker.ended(None, started=False)
            for worker in self._children.values():
                worker.ended(None)  # it dies with the template; how, nobody can say now
            self._pending.clear()
            self._children.clear()

    def _take(self, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            self._ready = True
        elif kind == "unusable":
            self._fail(message[1])
        elif kind == "forked":
            worker = self._pending.pop(message[1])
            worker.forked(message[2])
            self._children[message[2]] = worker
        elif kind == "failed":
            self._pending.pop(message[1]).ended(None, started=False)
            self._fail(message[2])
        elif kind == "exited":
            worker = self._children.pop(message[1], None)
            if worker is not None:
                worker.ended(message[2])

    def _fail(self, why: str) -> None:
        """From now on the pool starts fresh interpreters; say why, once (the lock is held)."""
        if self.problem is None:
            self.problem = why
            if not self._closing:
                log.warning("%s; workers start as fresh interpreters instead", why)


def _pipelines() -> list[tuple[str, str]]:
    """[module, file] of the pipelines this process loaded: each new worker imports them first."""
    return sorted(LOADED.items())


MAX_SCANNED = 200  # the user's files read for their imports, at most


def _users(file: str | None, roots: Collection[str]) -> bool:
    """Whether `file` is the user's own code: under a pipeline's folder, not an installed package."""
    return bool(file) and not early.installed(file) and any(file.startswith(root) for root in roots)


def warm_modules(pipelines: Mapping[str, str]) -> list[str]:
    """The modules the pipelines' own code imports, other than the user's own: those this process
    has imported (so they import), as its import of the pipelines found them in their source."""
    roots = {os.path.join(os.path.dirname(os.path.abspath(file)), "") for file in pipelines.values()}
    modules = list(sys.modules.items())
    own = {os.path.abspath(file) for file in pipelines.values()}
    own.update(
        getattr(m, "__file__", None) or "" for _, m in modules if _users(getattr(m, "__file__", None), roots)
    )
    names: set[str] = set()
    for file in sorted(filter(None, own))[:MAX_SCANNED]:
        names |= early.source_imports(file)
    found = dict(modules)
    return sorted(
        name for name in names if name in found and not _users(getattr(found[name], "__file__", None), roots)
    )


class Spawned:
    """A worker started as a fresh interpreter: a child of this process."""

    started = True

    def __init__(self, process: subprocess.Popen) -> None:
        self.process, self.pid = process, process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill_group(self) -> None:
        # Before the worker is reaped its pid (and so its group id) cannot be reused:
        # the group goes down even when the worker itself has already died.
        if self.process.returncode is None:
            _kill(self.process.pid)

    def signal(self, signum: int) -> bool:
        return self.process.returncode is None and _signal(self.process.pid, signum)

    def wait(self, timeout: float | None = None) -> int | None:
        return self.process.wait(timeout)


def thread_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """A worker's native thread pools start at one thread (each attempt then gets as many as its
    CPUs); thread counts the user set in the environment are theirs to keep."""
    if any(environ.get(name) for name in THREAD_VARIABLES):
        return {USER_THREADS: "1"}
    return dict.fromkeys(THREAD_VARIABLES, "1")


class Launcher:
    """Starts the pool's workers with `env` added to their environment; `start` is FORK or SPAWN."""

    def __init__(self, env: Mapping[str, str], start: str = FORK) -> None:
        self._env = dict(env)
        self._template: Template | None = None
        if start == FORK and not self._env:
            self._template = early.adopt()
        if start == FORK and self._template is None:
            template_env = {**self._environment(), WARM: json.dumps(warm_modules(dict(LOADED)))}
            if NVML_CHECK not in os.environ:  # so a module-level torch.cuda.is_available() stays fork-safe
                template_env.update({NVML_CHECK: "1", UNSET: NVML_CHECK})
            try:
                self._template = Template(template_env)
            except OSError as exc:
                log.warning("cannot start the worker template (%s); workers start as fresh interpreters", exc)

    def _environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **self._env,
            "FLOWLIB_WORKER_SYS_PATH": json.dumps(sys.path),
            # imported while the scheduler starts up, not when the first task arrives (torch takes seconds)
            "FLOWLIB_WORKER_PRELOAD": json.dumps(_pipelines()),
            **thread_settings(os.environ),
        }

    def start(
        self, env: Mapping[str, str] | None = None, fds: Sequence[int] = (), *, fresh: bool = False
    ) -> PoolWorker:
        """A new worker, `env` added to its environment, holding `fds` open while it lives. `fresh`:
        a new interpreter even when a template could fork it (its environment must hold from the
        interpreter's start, as CUDA_VISIBLE_DEVICES must before CUDA initialises)."""
        ours, theirs = socket.socketpair()
        log_path = os.path.join(tempfile.gettempdir(), f"flowlib-worker-{secrets.token_hex(8)}.log")
        extra = {**(env or {}), LOG_PATH_ENV: log_path}
        try:
            process: WorkerProcess | None = None
            if self._template is not None and not fresh:
                process = self._template.fork(theirs, extra, fds)
            if process is None:
                process = Spawned(
                    subprocess.Popen(
                        [sys.executable, "-m", "executors.worker", str(theirs.fileno())],
                        pass_fds=[theirs.fileno(), *fds],
                        env={**self._environment(), **extra},
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # its own process group: a kill takes what the operator started
                    )
                )
        finally:
            theirs.close()
        return PoolWorker(process, Channel(ours), log_path=log_path)

    def close(self) -> None:
        """Stop the template (after the pool stopped its workers)."""
        if self._template is not None:
            self._template.close()
