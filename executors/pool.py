"""The local pool: worker processes on this machine and one loop over their connections.

One loop multiplexes every worker's connection, so results, events, deaths and timeouts
are handled as they happen, without polling. It runs on a thread of its own, or, when a
caller drives it (`drive_here`), on the caller's thread.

Tasks run on the pool's warm workers, as many at once as their CPUs fit in `size`. A
`Placement` (executors.placement) may claim a task for a worker of its own instead: a
fresh one-shot process started with its seat's environment, freed once it has exited.
"""

from __future__ import annotations

import dataclasses
import pickle
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping
from concurrent.futures import Future
from multiprocessing.connection import wait
from typing import Any

from executors.base import START_ALLOWANCE_S, Event, EventSink, TaskResult, TaskSpec, not_begun, timed_out
from executors.channel import Waker
from executors.launch import FORK, Launcher
from executors.placement import Placement, Unplaceable
from executors.pool_worker import PoolTask, PoolWorker, describe_exit
from executors.worker import HOST, RELEASE, dumps
from flowlib.resources import per_attempt


class WorkerPool:
    """Up to `size` warm workers started as `start` says (FORK or SPAWN), `env` added to every
    worker's environment; `placement` claims tasks for one-shot workers."""

    def __init__(
        self,
        size: int,
        *,
        start: str = FORK,
        env: Mapping[str, str] | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.size = size
        self._how, self._env, self._placement = start, dict(env or {}), placement
        self._launcher: Launcher | None = None
        self._workers: list[PoolWorker] = []
        self._queue: deque[PoolTask] = deque()  # for the warm workers
        self._seating: deque[PoolTask] = deque()  # claimed by the placement, waiting for a seat
        self._lock = threading.Lock()
        self._waker = Waker()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._driven = False
        self._pause: float | None = None  # the most seconds the loop may wait (seats to retry)
        self._busy = 0.0  # CPUs held by tasks on warm workers

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Start the first worker (and the template workers are forked from)."""
        self._launcher = Launcher(self._env, self._how)
        # One worker now, the others when tasks queue up: on a small machine every interpreter
        # starting at once slows the scheduler's own start, and a chain never needs a second.
        self._workers = [self._launcher.start()]

    def drive_here(self) -> None:
        """From now on the caller's thread runs the loop: it waits on `loop_handles()` for up to
        `loop_timeout()` seconds, then calls `serve()`. A result then reaches the caller without a
        thread in between: one wake-up less per task. Call it before the first submit, from a
        thread that lasts until shutdown (fresh workers started on it die with it)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the executor's loop already runs on its own thread")
            self._driven = True

    def _ensure_loop_locked(self) -> None:
        """Start the loop's own thread with the first task, unless a caller drives the loop."""
        if self._thread is None and not self._driven and not self._closing:
            self._thread = threading.Thread(target=self._loop, name="flowlib-local", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop every worker (and the template); tasks not done fail as cancelled."""
        with self._lock:  # no one-shot worker starts after this, so the loop below sees them all
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
        if self._launcher is not None:
            self._launcher.close()  # before the waits: a worker it has yet to fork never will be
        for worker in self._workers:
            try:
                worker.process.wait(timeout=5)
            except Exception:  # subprocess.TimeoutExpired; the worker is killed already
                pass
            worker.forget_log()
            worker.exited()
        with self._lock:
            pending = [w.task for w in self._workers if w.task] + list(self._queue) + list(self._seating)
            self._queue.clear()
            self._seating.clear()
        for task in pending:
            if task and not task.future.done():
                task.future.set_result(
                    TaskResult.failure(task.spec.task_id, "Cancelled", "the executor shut down")
                )

    # -- tasks --------------------------------------------------------------------------
    def submit(self, spec: TaskSpec, on_event: EventSink, *, held: bool = False) -> Future[TaskResult]:
        """Run `spec`; a `held` one starts only once `release`d. A worker may take a held task
        meanwhile and load it and its inputs: the scheduler hands tasks over before the commit
        they wait for."""
        task = PoolTask.of(spec, on_event, held=held)
        if self._placement is not None and self._placement.claims(spec):
            with self._lock:
                self._ensure_loop_locked()
                self._seating.append(task)
            self._wake()  # the loop seats it
            return task.future
        with self._lock:
            self._ensure_loop_locked()
            self._queue.append(task)
            self._dispatch_locked()
        if task.deadline is not None:
            self._wake()  # the loop's thread must learn the deadline of a task that started
        return task.future

    def release(self, task_ids: Collection[str]) -> None:
        """Let held tasks start (a deadline counts from here)."""
        task_ids = set(task_ids)
        wake = False
        with self._lock:
            for task in (*self._queue, *self._seating):
                if task.spec.task_id in task_ids:
                    task.held = False
                    wake = wake or task in self._seating
            for worker in self._workers:
                task = worker.task
                if task is not None and task.held and task.spec.task_id in task_ids:
                    task.held = False
                    self._start_locked(worker, task, RELEASE)
                    wake = wake or task.deadline is not None
        if wake:
            self._wake()  # the loop's thread must learn the new deadlines, or seat what may start

    def cancel(self, task_id: str, grace: float = 0.0) -> None:
        """Stop a task. With `grace`, a running operator is first asked to stop while its worker
        lives on (executors.stopping); its worker is killed only if it is still running then."""
        with self._lock:
            for waiting in (self._queue, self._seating):
                for task in list(waiting):
                    if task.spec.task_id == task_id:
                        waiting.remove(task)
                        task.future.set_result(
                            TaskResult.failure(task_id, "Cancelled", "cancelled before it started")
                        )
                        return
            for worker in self._workers:
                task = worker.task
                if task and task.spec.task_id == task_id:
                    gentle = grace > 0 and not task.held and task.spec.distributed is None
                    if gentle and task.stop_by is None and worker.stop_operator():
                        task.stop_by = time.monotonic() + grace
                        self._wake()  # the loop's thread must learn the new deadline
                    elif task.stop_by is None or not gentle:
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
                need = min(per_attempt(task.spec.resources, task.spec.distributed).cpus, self.size)
                if self._busy > 0 and self._busy + need > self.size + 1e-9:
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
                # until the worker reports the operator's start (a worker still starting up, or
                # loading inputs), the clock allows for that; then it counts from the start
                task.deadline = time.monotonic() + (task.spec.timeout or 0) + START_ALLOWANCE_S
        try:
            worker.conn.send(message)
        except (OSError, ValueError):
            worker.kill_reason = worker.kill_reason or ("WorkerDied", "could not send the task to the worker")
            worker.kill()

    def _grow_locked(self) -> None:
        """Start another warm worker while tasks wait and none is idle, up to the pool's size.

        A worker whose operator was asked to stop counts as idle: it is free within moments (or
        killed and replaced at its grace), and a fresh worker would pay the user's libraries'
        first-call costs again (a sweep's next trial after a pruned one: 1.5 s of torch's)."""
        if not self._queue or self._closing or self._launcher is None:
            return
        pool = [w for w in self._workers if not w.one_shot]
        idle = sum(1 for w in pool if w.task is None or w.task.stop_by is not None)
        if len(pool) >= self.size or len(self._queue) <= idle:
            return
        for _ in range(min(self.size - len(pool), len(self._queue) - idle)):
            self._workers.append(self._launcher.start())
        self._wake()  # the loop must watch the new workers' connections

    def _seat_locked(self) -> bool:
        """Start every claimed task that gets a seat now on a fresh worker of its own; True while
        some wait for one."""
        waiting = False
        for task in list(self._seating):
            if self._closing or self._launcher is None:
                return False
            if task.held:
                continue
            assert self._placement is not None
            try:
                seat = self._placement.seat(task.spec)
            except Unplaceable as exc:
                self._seating.remove(task)
                task.future.set_result(TaskResult.failure(task.spec.task_id, exc.kind, str(exc)))
                continue
            if seat is None:
                waiting = True
                continue
            self._seating.remove(task)
            task.spec = dataclasses.replace(task.spec, env={**task.spec.env, **seat.env})
            try:
                worker = self._launcher.start(seat.env, seat.fds, fresh=True)
            except OSError as exc:
                seat.free()
                message = f"could not start a worker for the task: {exc}"
                task.future.set_result(TaskResult.failure(task.spec.task_id, "WorkerDied", message))
                continue
            worker.one_shot, worker.on_exit, worker.task = True, seat.free, task
            self._workers.append(worker)
            self._start_locked(worker, task, dumps(task.spec))
        return waiting

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
            deadlines += [w.task.stop_by for w in self._workers if w.task and w.task.stop_by is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        if self._pause is not None:
            timeout = self._pause if timeout is None else min(timeout, self._pause)
        return timeout

    def serve(self, ready: Collection[Any]) -> None:
        """One pass of the loop: take what the `ready` handles (of those waited on) brought, kill
        what ran past its deadline, seat what may start.

        Fresh workers started here outlive the call: PR_SET_PDEATHSIG kills such a worker when
        the *thread* that started it ends, and the loop's thread lasts until shutdown."""
        if self._waker in ready:
            self._waker.drain()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker.conn in ready and not self._read(worker):
                self._replace(worker)
        self._enforce_timeouts()
        with self._lock:
            waiting = bool(self._seating) and self._seat_locked()
        self._pause = self._placement.retry_s if waiting and self._placement is not None else None

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
        """A worker process died: fail its attempt with how it died, start a fresh one. A worker
        that never came to be (its template failed first) fails nothing: its task goes back."""
        worker.kill()
        try:
            exitcode = worker.process.wait(timeout=5)
        except Exception:  # subprocess.TimeoutExpired: it does not say how it ended
            exitcode = None
        how, code, number = describe_exit(exitcode)
        printed = worker.unsent_log()
        worker.forget_log()
        requeue = worker.process.started is False
        with self._lock:
            task, worker.task = worker.task, None
            self._release_locked(worker, task)
            reason, worker.kill_reason = worker.kill_reason, None
            if requeue and reason is None and task is not None and not task.future.done():
                task.deadline = 0.0 if task.spec.timeout else None
                self._queue.appendleft(task)
                task = None
            index = self._workers.index(worker)
            if worker.one_shot or self._closing or self._launcher is None:
                del self._workers[index]
            else:
                self._workers[index] = self._launcher.start()
            worker.exited()
            if not self._closing:
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
        task.started, task.began = when, True
        if task.spec.timeout:
            with self._lock:
                if task.deadline is not None and not task.held:
                    task.deadline = time.monotonic() - (time.time() - when) + task.spec.timeout

    def _release_locked(self, worker: PoolWorker, task: PoolTask | None) -> None:
        if task is not None and not worker.one_shot:
            self._busy = max(0.0, self._busy - task.cpus)

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
                    timeout = task.spec.timeout or 0
                    worker.kill_reason = (
                        "Timeout",
                        timed_out(timeout) if task.began else not_begun(timeout),
                    )
                    worker.kill()
                elif task and task.stop_by is not None and now >= task.stop_by and worker.kill_reason is None:
                    worker.kill_reason = ("Cancelled", "cancelled while running (it did not stop when asked)")
                    worker.kill()
