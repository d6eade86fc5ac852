"""`local`: a pool of warm worker processes on this machine.

One loop multiplexes every worker's pipe, so results, events, deaths and timeouts
are handled as they happen, without polling. It runs on a thread of its own, or,
when the scheduler drives it (`drive_here`), on the scheduler's thread.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from multiprocessing.connection import wait
from typing import Any

from executors.base import Event, EventSink, Executor, TaskResult, TaskSpec
from executors.capture import LOG_PATH_ENV
from executors.channel import Channel, Waker
from executors.pool_worker import PoolTask, PoolWorker, describe_exit
from executors.worker import HOST, RELEASE, THREAD_VARIABLES, USER_THREADS, dumps
from flowlib.resources import Resources, per_attempt


def thread_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """A worker's native thread pools start at one thread (each attempt then gets as many as its
    CPUs); thread counts the user set in the environment are theirs to keep."""
    if any(environ.get(name) for name in THREAD_VARIABLES):
        return {USER_THREADS: "1"}
    return dict.fromkeys(THREAD_VARIABLES, "1")


def machine_memory() -> int:
    """This machine's memory in bytes: no single node may ask for more."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # no psutil import on every run
    except (ValueError, OSError, AttributeError):
        import psutil

        return int(psutil.virtual_memory().total)


class LocalExecutor(Executor):
    name = "local"

    def __init__(self) -> None:
        self._workers: list[PoolWorker] = []
        self._queue: deque[PoolTask] = deque()
        self._lock = threading.Lock()
        self._waker = Waker()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._driven = False
        self._pause: float | None = None  # the most seconds the loop may wait (a hook's wish)
        self._size = 1
        self._busy = 0.0  # CPUs held by running pool tasks

    # -- lifecycle --------------------------------------------------------------------
    def start(self, settings: Mapping[str, Any]) -> None:
        self._size = int(settings.get("workers") or os.cpu_count() or 1)
        self.prefetch = 4 * self._size
        # One worker now, the others when tasks queue up: on a small machine every interpreter
        # starting at once slows the scheduler's own start, and a chain never needs a second.
        self._workers = [self._spawn()]

    def drive_here(self) -> None:
        """From now on the caller's thread runs the loop: it waits on `loop_handles()` for up to
        `loop_timeout()` seconds, then calls `serve()`. A result then reaches the caller without a
        thread in between: one wake-up less per task. Call it before the first submit, from a
        thread that lasts until shutdown (workers started on it die with it)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the executor's loop already runs on its own thread")
            self._driven = True

    def _ensure_loop_locked(self) -> None:
        """Start the loop's own thread with the first task, unless a caller drives the loop."""
        if self._thread is None and not self._driven and not self._closing:
            self._thread = threading.Thread(target=self._loop, name="flowlib-local", daemon=True)
            self._thread.start()

    def _spawn(self, env: Mapping[str, str] | None = None, pass_fds: Sequence[int] = ()) -> PoolWorker:
        """Start a worker as `python -m executors.worker FD` over a socket pair.

        A fresh interpreter, not multiprocessing's spawn: that would re-run the
        user's main script in every worker. `env` is added to its environment from
        the start; `pass_fds` are inherited by it.
        """
        from flowlib.loading import LOADED

        ours, theirs = socket.socketpair()
        log_path = os.path.join(tempfile.gettempdir(), f"flowlib-worker-{secrets.token_hex(8)}.log")
        full_env = {
            **os.environ,
            **(env or {}),
            "FLOWLIB_WORKER_SYS_PATH": json.dumps(sys.path),
            # imported while the scheduler starts up, not when the first task arrives (torch takes seconds)
            "FLOWLIB_WORKER_PRELOAD": json.dumps(sorted(LOADED.items())),
            LOG_PATH_ENV: log_path,
            **thread_settings(os.environ),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "executors.worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno(), *pass_fds],
            env=full_env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a kill takes what the operator started too
        )
        theirs.close()
        return PoolWorker(process, Channel(ours), log_path=log_path)

    def capacity(self) -> Resources:
        return Resources(cpus=self._size, gpus=0, memory=machine_memory())

    def shutdown(self) -> None:
        self._closing = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)  # first: it may be closing a dead worker's connection itself
        self._waker.close()
        for worker in self._workers:
            try:
                worker.conn.close()
            except OSError:
                pass
            worker.kill()
        for worker in self._workers:
            try:
                worker.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            worker.forget_log()
        with self._lock:
            pending = [w.task for w in self._workers if w.task] + list(self._queue)
            self._queue.clear()
        for task in pending:
            if task and not task.future.done():
                task.future.set_result(
                    TaskResult.failure(task.spec.task_id, "Cancelled", "the executor shut down")
                )

    # -- tasks --------------------------------------------------------------------------
    def submit(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        return self._submit(PoolTask.of(task, on_event))

    def submit_held(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        """Like `submit`, but the task starts only once `release`d. A worker may take it meanwhile
        and load it and its inputs: the scheduler hands tasks over before the commit they wait for."""
        return self._submit(PoolTask.of(task, on_event, held=True))

    def release(self, task_ids: Collection[str]) -> None:
        """Let held tasks start (a deadline counts from here)."""
        task_ids = set(task_ids)
        timed = False
        with self._lock:
            for task in self._queue:
                if task.spec.task_id in task_ids:
                    task.held = False
            for worker in self._workers:
                task = worker.task
                if task is not None and task.held and task.spec.task_id in task_ids:
                    task.held = False
                    self._start_locked(worker, task, RELEASE)
                    timed = timed or task.deadline is not None
        if timed:
            self._wake()  # the loop's thread must learn the new deadlines

    def _submit(self, task: PoolTask) -> Future[TaskResult]:
        with self._lock:
            self._ensure_loop_locked()
            self._queue.append(task)
            self._dispatch_locked()
        if task.deadline is not None:
            self._wake()  # the loop's thread must learn the deadline of a task that started
        return task.future

    def cancel(self, task_id: str) -> None:
        with self._lock:
            for task in list(self._queue):
                if task.spec.task_id == task_id:
                    self._queue.remove(task)
                    task.future.set_result(
                        TaskResult.failure(task_id, "Cancelled", "cancelled before it started")
                    )
                    return
            for worker in self._workers:
                if worker.task and worker.task.spec.task_id == task_id:
                    worker.kill_reason = ("Cancelled", "cancelled while running")
                    worker.kill()

    def _dispatch_locked(self) -> None:
        """Start queued tasks in order while an idle worker and their CPUs are free."""
        self._grow_locked()
        for worker in self._workers:
            if not self._queue:
                return
            if worker.task is None and worker.alive() and not worker.one_shot:
                task = self._queue[0]
                need = min(per_attempt(task.spec.resources, task.spec.distributed).cpus, self._size)
                if self._busy > 0 and self._busy + need > self._size + 1e-9:
                    return  # the head waits for CPUs; the ones behind it wait their turn
                self._queue.popleft()
                task.cpus = need
                self._busy += need
                worker.task = task
                self._start_locked(worker, task, dumps(("held", task.spec) if task.held else task.spec))

    def _start_locked(self, worker: PoolWorker, task: PoolTask, message: bytes) -> None:
        """Send a worker its task, or the release of the one it holds; a held task's clock waits."""
        if not task.held:
            task.started = time.time()
            if task.deadline is not None:
                task.deadline = time.monotonic() + (task.spec.timeout or 0)
        try:
            worker.conn.send(message)
        except (OSError, ValueError):
            worker.kill_reason = worker.kill_reason or ("WorkerDied", "could not send the task to the worker")
            worker.kill()

    def _grow_locked(self) -> None:
        """Start another pool worker while tasks wait and none is idle, up to the pool's size."""
        if not self._queue or self._closing:
            return
        pool = [w for w in self._workers if not w.one_shot]
        idle = sum(1 for w in pool if w.task is None)
        if len(pool) >= self._size or len(self._queue) <= idle:
            return
        for _ in range(min(self._size - len(pool), len(self._queue) - idle)):
            self._workers.append(self._spawn())
        self._wake()  # the loop must watch the new workers' pipes

    def _wake(self) -> None:
        self._waker.wake()

    # -- the multiplexing loop ----------------------------------------------------------
    def _loop(self) -> None:
        while not self._closing:
            ready = wait(self.loop_handles(), self.loop_timeout())
            if self._closing:
                return
            self.serve(ready)

    def loop_handles(self) -> list[Any]:
        """What the loop waits on: the wake-up pipe and every worker's connection."""
        with self._lock:
            return [self._waker, *(worker.conn for worker in self._workers)]

    def loop_timeout(self) -> float | None:
        """The most seconds the loop may wait: until the nearest deadline, or None for no limit."""
        with self._lock:
            deadlines = [
                w.task.deadline
                for w in self._workers
                if w.task and w.task.deadline is not None and not w.task.held
            ]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        if self._pause is not None:
            timeout = self._pause if timeout is None else min(timeout, self._pause)
        return timeout

    def serve(self, ready: Collection[Any]) -> None:
        """One pass of the loop: take what the `ready` handles (of those waited on) brought, kill
        what ran past its deadline."""
        if self._waker in ready:
            self._waker.drain()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker.conn in ready and not self._read(worker):
                self._replace(worker)
        self._enforce_timeouts()
        self._pause = self._loop_step()

    def _loop_step(self) -> float | None:
        """Run at the end of every loop pass, on the loop's thread (a hook).

        Workers started here outlive the call: PR_SET_PDEATHSIG kills a worker when
        the *thread* that started it ends, and the loop's thread lasts until shutdown.
        Return the most seconds to wait before the next pass, or None for no limit.
        """
        return None

    def _read(self, worker: PoolWorker) -> bool:
        """Take what the worker sent; False when its end closed (it died)."""
        try:
            for raw in worker.conn.receive_ready():
                message = pickle.loads(raw)
                if message[0] == "event":
                    _, task_id, kind, data = message
                    task = worker.task
                    if task is not None:
                        if kind == "log":
                            task.log_sent = data.get("end", task.log_sent)
                        elif kind == "started":
                            self._started(task, data.get("time"))
                        task.on_event(Event(task_id, kind, data))
                    continue
                result: TaskResult = message[1]
                if worker.one_shot:
                    worker.end_input()  # it exits; its closed end brings it to _replace
                with self._lock:
                    task, worker.task = worker.task, None
                    self._release_locked(worker, task)
                    self._dispatch_locked()
                if task is not None:
                    task.future.set_result(result)
        except (EOFError, OSError):
            return False
        return True

    def _replace(self, worker: PoolWorker) -> None:
        """A worker process died: fail its attempt with how it died, start a fresh one."""
        worker.kill()
        try:
            exitcode = worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            exitcode = None
        how, code, number = describe_exit(exitcode)
        printed = worker.unsent_log()
        worker.forget_log()
        with self._lock:
            task, worker.task = worker.task, None
            self._release_locked(worker, task)
            reason, worker.kill_reason = worker.kill_reason, None
            index = self._workers.index(worker)
            if not self._closing:
                if worker.one_shot:
                    del self._workers[index]
                    self._retired_locked(worker)
                else:
                    self._workers[index] = self._spawn()
                self._dispatch_locked()
        worker.conn.close()
        if task is None or task.future.done():
            return
        kind, message = reason or ("WorkerDied", how)
        task.future.set_result(
            TaskResult.failure(
                task.spec.task_id,
                kind,
                message,
                exit_code=code,
                signal=number,
                host=HOST,
                pid=worker.process.pid,
                started_at=task.started,
                log=printed,
            )
        )

    def _started(self, task: PoolTask, when: float | None) -> None:
        """The worker began the operator: its timeout counts from then, not from the hand-over."""
        if when is None:
            return
        task.started = when
        if task.spec.timeout:
            with self._lock:
                if task.deadline is not None and not task.held:
                    task.deadline = time.monotonic() - (time.time() - when) + task.spec.timeout

    def _release_locked(self, worker: PoolWorker, task: PoolTask | None) -> None:
        if task is not None and not worker.one_shot:
            self._busy = max(0.0, self._busy - task.cpus)

    def _retired_locked(self, worker: PoolWorker) -> None:
        """A one-shot worker has exited and left the pool (a hook; the lock is held)."""

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        with self._lock:
            for worker in self._workers:
                task = worker.task
                if (
                    task
                    and task.deadline is not None
                    and not task.held
                    and now >= task.deadline
                    and worker.kill_reason is None
                ):
                    worker.kill_reason = (
                        "Timeout",
                        f"timed out after {task.spec.timeout:g} s and was killed",
                    )
                    worker.kill()
