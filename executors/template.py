"""Warm workers: a template process that has imported the pipeline's libraries forks each new worker.

A fresh worker interpreter imports again whatever the pipeline imports (pandas,
scikit-learn, torch: seconds, per worker). Instead the local pool starts one template,
`python -m executors.template FD`, which imports those modules once and then forks a
worker per request: the child gets its line to the pool (a socket passed over the
template's control socket with SCM_RIGHTS), leads a process group of its own, imports
the pipeline itself (its module-level code runs in each worker, as in a fresh one, but
finds its libraries loaded) and serves tasks as `executors.worker` does.

Safety rules:
- The template stays single-threaded: a fork copies only the forking thread, so a lock
  another thread held would stay held in the child for ever. When its imports started a
  Python thread, initialised CUDA (a forked child cannot use CUDA) or failed, it says so
  and exits; the pool then starts fresh interpreters, saying why once.
- It ends when the pool's end of its control socket closes (the pool shut down, or the
  scheduler died) or when its parent changes, and kills its workers' process groups on
  the way out; each worker also dies with it (PR_SET_PDEATHSIG).
- It reports a worker's exit but reaps it only when the pool asks: until then the pid,
  and so the process group id, cannot be reused, and the pool's kill never hits a stranger.

Messages are pickled tuples, one per packet (SOCK_SEQPACKET). To the template:
("fork", request, env, pipelines) with the worker's socket (and descriptors it must hold)
attached, ("reap", pid). From it: ("ready",) or ("unusable", why), ("forked", request,
pid), ("failed", request, why), ("exited", pid, code) with code as Popen's returncode.
"""

from __future__ import annotations

import gc
import importlib
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

PACKET = 1 << 16
WARM_MODULES = ("executors.worker", "flowlib.store", "flowlib.context", "flowlib.typecheck", "cloudpickle")
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"  # torch.cuda.is_available() without initialising CUDA
UNSET = "FLOWLIB_TEMPLATE_UNSET"  # variables set for the template's imports only
WARM = "FLOWLIB_TEMPLATE_WARM"  # the modules the template imports (see executors.launch.warm_modules)
SKIP_MISSING = "FLOWLIB_TEMPLATE_SKIP_MISSING"  # warm names read from source: skip those that are no module


def send(sock: socket.socket, message: tuple, fds: Sequence[int] = ()) -> None:
    """One message, with descriptors attached (the receiver gets copies)."""
    socket.send_fds(sock, [pickle.dumps(message)], list(fds))


def _prepare(sys_path: list[str], warm: list[str], skip_missing: bool = False) -> str | None:
    """Import what every worker needs; return why forking from here is unsafe, or None."""
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # Nothing here prints what a user needs to see: a library's import-time notices would
    # otherwise appear once more, from a process the user did not start.
    null = os.open(os.devnull, os.O_WRONLY)
    saved = [os.dup(1), os.dup(2)]
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        for name in (*WARM_MODULES, *warm):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if not (skip_missing and exc.name == name):  # a name read from source: not a module
                    return f"importing {name} failed in the worker template ({type(exc).__name__}: {exc})"
            except Exception as exc:
                return f"importing {name} failed in the worker template ({type(exc).__name__}: {exc})"
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        return f"importing the pipeline's modules started threads ({names}): forking a threaded process is unsafe"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "importing the pipeline's modules initialised CUDA, which a forked worker could not use"
    return None


def _exited(pid: int) -> int | None:
    """The pid's returncode once it has ended (left a zombie for the pool's reap), else None."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return -signal.SIGKILL
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _child(sock: int, env: dict[str, str], preload: list[list[str]], template: int, close: list[int]) -> None:
    """Become a worker serving the pool on `sock` (never returns): import the pipelines of
    `preload` ([module, file]) first, as a fresh worker would. Descriptors that came with the
    request stay open in it for as long as it lives."""
    code = 1
    try:
        os.setsid()  # its own process group: a kill takes what the operator started too
        for fd in close:
            os.close(fd)
        os.set_inheritable(sock, False)
        os.environ.update(env)
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed()  # the global generator was the template's: give each worker its own
        from executors.channel import Channel
        from executors.worker import become_worker, preload_pipelines, serve_tasks

        become_worker(parent=template)
        preload_pipelines(preload)
        serve_tasks(Channel(socket.socket(fileno=sock)))
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # never the template's atexit handlers, nor a return into its loop
        os._exit(code)


class _Server:
    """The template's loop: fork on request, report exits, reap on request."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.parent = os.getppid()
        self.live: dict[int, int | None] = {}  # pid -> its pidfd (wakes the loop when it ends)
        self.zombies: set[int] = set()  # ended and reported, reaped once the pool asks

    def run(self) -> None:
        try:
            self._serve()
        except OSError:  # the pool's end is gone: nobody is left to serve
            pass

    def _serve(self) -> None:
        while True:
            fds = [self.control, *(fd for fd in self.live.values() if fd is not None)]
            ready, _, _ = select.select(fds, [], [], 1.0)
            if os.getppid() != self.parent:
                return
            if self.control in ready and not self._take():
                return
            self._report_exits()

    def _take(self) -> bool:
        """Handle one request; False once the pool's end closed."""
        try:
            data, fds, _, _ = socket.recv_fds(self.control, PACKET, 64)
        except OSError:  # the pool's end closed with our reports unread
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        message = pickle.loads(data)
        if message[0] == "fork":
            self._fork(message[1], message[2], message[3], fds)
        elif message[0] == "reap" and message[1] in self.zombies:
            self.zombies.discard(message[1])
            os.waitpid(message[1], 0)
        return True

    def _fork(self, request: int, env: dict[str, str], preload: list[list[str]], fds: list[int]) -> None:
        if not fds:
            send(self.control, ("failed", request, "no socket came with the request"))
            return
        close = [self.control.fileno(), *(fd for fd in self.live.values() if fd is not None)]
        template = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            send(self.control, ("failed", request, f"could not fork a worker: {exc}"))
        else:
            if pid == 0:
                _child(fds[0], env, preload, template, close)
            try:
                self.live[pid] = os.pidfd_open(pid)
            except (AttributeError, OSError):
                self.live[pid] = None  # the 1 s select timeout finds its exit instead
            send(self.control, ("forked", request, pid))
        finally:
            for fd in fds:
                os.close(fd)  # in this process: the worker holds its own copies

    def _report_exits(self) -> None:
        for pid in list(self.live):
            code = _exited(pid)
            if code is None:
                continue
            pidfd = self.live.pop(pid)
            if pidfd is not None:
                os.close(pidfd)
            self.zombies.add(pid)
            send(self.control, ("exited", pid, code))

    def stop(self) -> None:
        """Take every worker's process group down with the template, and reap them."""
        for pid in [*self.live, *self.zombies]:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + 2.0
        left = set(self.live) | self.zombies
        pause = 0.0005  # a killed worker is gone in about a millisecond: the pool's close waits for this
        while left and time.monotonic() < deadline:
            for pid in list(left):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    left.discard(pid)
            if left:
                time.sleep(pause)
                pause = min(2 * pause, 0.01)


def main() -> None:
    """`python -m executors.template FD`: import, then fork workers for the pool on FD."""
    import json

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the scheduler's to handle
    control = socket.socket(fileno=int(sys.argv[1]))
    sys_path = json.loads(os.environ.pop("FLOWLIB_WORKER_SYS_PATH", "[]"))
    warm = json.loads(os.environ.pop(WARM, "[]"))
    skip_missing = os.environ.pop(SKIP_MISSING, "") == "1"
    unset = os.environ.pop(UNSET, "")
    problem = _prepare(sys_path, warm, skip_missing)
    for name in filter(None, unset.split(",")):
        os.environ.pop(name, None)  # set for the imports only: the workers see the user's environment
    try:
        send(control, ("ready",) if problem is None else ("unusable", problem))
    except OSError:
        return  # the pool is gone already
    if problem is not None:
        return
    # What the imports made lives as long as every worker forked from here: frozen, the workers'
    # full collections never walk it (nor touch its pages, which stay shared with the template).
    gc.freeze()
    server = _Server(control)
    try:
        server.run()
    finally:
        server.stop()
    # nothing is left to tear down: skip the interpreter's teardown of what the pipeline
    # imported (tens of milliseconds with torch or pandas) that the pool's close waits for
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
