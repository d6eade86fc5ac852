"""The driver: runs several state machines at once over shared executors and one ledger.

Each loop step lets every run resolve what became ready, commits what each run decided
(before anything that depends on it starts: executors that can hold a task get it just
before the commit, to load it and its inputs meanwhile, and start it once released),
hands attempts to executors as the ledger allows, and waits in one inbox for results,
worker events, cancels and timers. `flow run` drives one run with it; `flow server`
drives many.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from executors.base import Drivable, Event, Executor, Holding, TaskResult
from scheduler.drivers.inbox import Inbox
from scheduler.drivers.ledger import Ledger
from scheduler.drivers.tasks import TaskSpecs
from scheduler.engine.machine import CancelTask, RunMachine, Submit
from scheduler.store import repository as repo
from scheduler.store.batch import RunRows, Session
from scheduler.store.outage import one_line, unreachable

FLUSH_EVERY_S = 0.5  # the longest a completion waits for its commit when nothing forces one
SPIN_S = 0.002  # how long the driver polls for a result before it sleeps (see Inbox.wait)
HEARTBEAT_S = 2.0
IDLE_WAIT_S = 1.0
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
Progress = Callable[[str, str, dict[str, Any]], None]


def print_warning(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


@dataclass(eq=False)
class RunHandle:
    """A run the driver executes: its machine, how its rows are committed, how its tasks are built."""

    run_id: str
    machine: RunMachine
    rows: RunRows
    specs: TaskSpecs
    progress: Progress | None = None
    max_parallel: int | None = None
    on_done: Callable[[str, str | None], None] | None = None
    on_event: Callable[[str, Event], None] | None = None  # (node, event) as an attempt reports it
    in_flight: int = 0  # attempts handed to executors and not back yet
    flushed_at: float = field(default_factory=time.monotonic)
    status: str | None = None  # set once it ended
    error: str | None = None


class Driver:
    def __init__(
        self,
        executors: dict[str, Executor],
        *,
        session: Session,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.executors, self.session = executors, session
        self.ledger = Ledger(executors)
        self.inbox = Inbox()
        self.runs: dict[str, RunHandle] = {}
        self.queues: dict[str, deque[tuple[RunHandle, Submit]]] = {name: deque() for name in executors}
        self.tasks: dict[str, tuple[RunHandle, Submit]] = {}  # task id -> its run, while an executor has it
        self.on_warning = on_warning or print_warning
        # executors whose loop runs on this thread, in _wait: their results come without a thread
        # hop (not beside one that runs tasks on this thread: a pool's timeouts would wait for them)
        self.driven: list[Any] = []
        if not any(executor.runs_in_submit for executor in executors.values()):
            self.driven = [e for e in executors.values() if isinstance(e, Drivable)]
        for executor in self.driven:
            executor.drive_here()
        self.holding = {name for name, executor in executors.items() if isinstance(executor, Holding)}
        self._beating = False
        self.serving = False  # set by a server: the loop goes on with no run, until told to stop
        self.after_advance: Callable[[], None] | None = None  # the foreground driver's gc upkeep

    # -- runs ----------------------------------------------------------------------------------
    def add(self, handle: RunHandle) -> None:
        """Start executing a run (call on the driver's thread, or `post` it from another)."""
        self.runs[handle.run_id] = handle
        self._take(handle)

    def post(self, message: tuple) -> None:
        """Queue a message from any thread: ("add", handle) or ("cancel", run_id, why[, grace])."""
        self.inbox.put(message)

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Loop until every run ended, or, given `until`, until it says stop (a serving driver
        with no runs waits for one to be posted: post any message once `until` holds, to wake it)."""
        self._start_heartbeat()
        try:
            while self.runs if until is None else not until():
                self.step()
        finally:
            self._beating = False

    def step(self) -> None:
        now = time.time()
        for handle in list(self.runs.values()):
            self._guard(handle, handle.machine.advance, now)
        if self.after_advance is not None:
            self.after_advance()
        due = [(h, h.machine.writes.take()) for h in self.runs.values() if self._commit_due(h)]
        if due:
            for handle, writes in due:  # what tasks handed over before the commit will read
                try:
                    handle.rows.write_files(writes)
                except Exception as exc:  # a full disk, say: the run cannot go on here
                    self._lost(handle, f"cannot write to the artifact store: {exc}")
                    continue
                handle.specs.blobs.remember(
                    {
                        row["digest"]: row["data"]
                        for row in writes.rows["artifacts"]
                        if row["data"] is not None
                    }
                )
            due = [(handle, writes) for handle, writes in due if handle.run_id in self.runs]
            held = self._dispatch(held=True)
            for handle, writes in due:
                self._commit(handle, writes)
            for name, task_ids in held.items():
                self.executors[name].release(task_ids)  # type: ignore[attr-defined]
        self._dispatch()
        for handle in [h for h in self.runs.values() if h.machine.done]:
            self._finish(handle)
        if self.runs:
            self._wait()
        elif self.serving:  # a server's driver with nothing to run waits for the next one
            self.inbox.wait(IDLE_WAIT_S)
            now = time.time()
            for message in self.inbox.take():
                self._on_message(message, now)

    def stop_all(self) -> None:
        """End every run now, as its machine stands (after a cancel): commit and record its end,
        without waiting for the attempts being stopped."""
        for handle in list(self.runs.values()):
            self._take(handle)
            self._finish(handle)

    def close(self) -> None:
        self._beating = False
        self.inbox.close()
        self.session.stop()

    # -- commits ---------------------------------------------------------------------------------
    def _commit_due(self, handle: RunHandle) -> bool:
        writes = handle.machine.writes
        if not writes:
            return False
        return writes.urgent or not handle.in_flight or time.monotonic() - handle.flushed_at >= FLUSH_EVERY_S

    def _commit(self, handle: RunHandle, writes: Any = None) -> None:
        handle.flushed_at = time.monotonic()
        try:
            handle.rows.commit(self.session, writes if writes is not None else handle.machine.writes.take())
        except Exception as exc:
            self._lost(handle, f"cannot record the run: {type(exc).__name__}: {exc}")

    def _finish(self, handle: RunHandle) -> None:
        self._commit(handle)
        if handle.run_id not in self.runs:
            return  # lost on the way
        status, error = handle.machine.outcome()
        try:
            self.session.run(lambda conn: repo.end_run(conn, handle.run_id, status, error))
        except Exception as exc:
            self._lost(handle, f"cannot record how the run ended: {type(exc).__name__}: {exc}")
            return
        self._end(handle, status, error)

    def _end(self, handle: RunHandle, status: str, error: str | None) -> None:
        handle.status, handle.error = status, error
        self.runs.pop(handle.run_id, None)
        for queue in self.queues.values():
            if any(h is handle for h, _ in queue):
                kept = [(h, s) for h, s in queue if h is not handle]
                queue.clear()
                queue.extend(kept)
        if handle.on_done is not None:
            handle.on_done(status, error)

    def _lost(self, handle: RunHandle, why: str) -> None:
        """The database cannot record this run any more: stop it here, leave it for a resume."""
        self.on_warning(
            f"run {handle.run_id}: {why}; it stops here and reads `interrupted` (flow resume continues it)"
        )
        for task_id, (owner, submit) in list(self.tasks.items()):
            if owner is handle:
                self.executors[submit.executor].cancel(task_id)
        self._end(handle, "interrupted", why)

    # -- machine calls ----------------------------------------------------------------------------
    def _guard(self, handle: RunHandle, call: Callable[..., None], *args: Any) -> None:
        """Call into a run's machine; an internal error fails that run (recorded), not the driver."""
        if handle.run_id not in self.runs:
            return
        try:
            call(*args)
        except Exception as exc:
            if unreachable(exc):  # the database stayed away past [flow] db_outage_seconds
                self._lost(handle, f"the database does not answer ({one_line(exc)})")
                return
            detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.on_warning(f"internal error in run {handle.run_id}:\n{detail}")
            try:
                handle.machine.abort(f"{type(exc).__name__}: {exc}", time.time())
            except Exception:
                self._lost(handle, f"internal error: {type(exc).__name__}: {exc}")
                return
        self._take(handle)

    def _take(self, handle: RunHandle) -> None:
        for command in handle.machine.take_commands():
            if isinstance(command, Submit):
                self.queues[command.executor].append((handle, command))
            else:
                self._cancel_task(command)
        if handle.progress is not None:
            for name, status, info in handle.machine.take_notices():
                handle.progress(name, status, info)
        else:
            handle.machine.notices.clear()

    def _cancel_task(self, command: CancelTask) -> None:
        queue = self.queues[command.executor]
        for entry in queue:
            if entry[1].task_id == command.task_id:
                queue.remove(entry)
                return
        if command.task_id in self.tasks:
            executor = self.executors[command.executor]
            if command.grace:
                executor.stop(command.task_id, command.grace)
            else:
                executor.cancel(command.task_id)

    # -- dispatch ------------------------------------------------------------------------------------
    def _dispatch(self, *, held: bool = False) -> dict[str, list[str]]:
        """Hand queued attempts to their executors while the ledger allows; with `held`, only to
        executors that hold tasks until released, and return their task ids by executor."""
        submitted: dict[str, list[str]] = {}
        for name, queue in self.queues.items():
            if not queue or (held and name not in self.holding):
                continue
            skipped: list[tuple[RunHandle, Submit]] = []  # of runs at their --max-parallel
            while queue:
                handle, submit = queue.popleft()
                if handle.max_parallel and handle.in_flight >= handle.max_parallel:
                    skipped.append((handle, submit))
                    continue
                if not self.ledger.fits(name, submit.op):
                    queue.appendleft((handle, submit))
                    break  # the head waits for room; the ones behind it wait their turn
                submitted.setdefault(name, []).append(self._submit(name, handle, submit, held))
            queue.extendleft(reversed(skipped))
        return submitted

    def _submit(self, name: str, handle: RunHandle, submit: Submit, held: bool) -> str:
        task_id = submit.task_id
        spec = handle.specs.spec(submit)
        self.ledger.take(name, submit.op)
        self.tasks[task_id] = (handle, submit)
        handle.in_flight += 1
        put = self.inbox.put

        def on_event(event: Event, _id: str = task_id) -> None:
            put(("event", _id, event))

        executor: Any = self.executors[name]
        future = executor.submit_held(spec, on_event) if held else executor.submit(spec, on_event)
        future.add_done_callback(lambda f, _id=task_id: put(("result", _id, f.result())))
        return task_id

    # -- waiting ------------------------------------------------------------------------------------
    def _wait(self) -> None:
        now, mono = time.time(), time.monotonic()
        deadlines = []
        for handle in self.runs.values():
            deadline = handle.machine.next_deadline()
            if deadline is not None:
                deadlines.append(mono + max(0.0, deadline - now))
            if handle.machine.writes:
                deadlines.append(handle.flushed_at + FLUSH_EVERY_S)
        timeout = max(0.0, min(deadlines) - mono) if deadlines else None
        for executor in self.driven:
            wanted = executor.loop_timeout()
            if wanted is not None:
                timeout = wanted if timeout is None else min(timeout, wanted)
        # spin only where a core is left over: then the driver, not a worker, is what waits
        spin = SPIN_S if self.driven and 0 < len(self.tasks) < CORES else 0.0
        ready = self.inbox.wait(timeout, [handle for e in self.driven for handle in e.loop_handles()], spin)
        for executor in self.driven:
            executor.serve(ready)
        now = time.time()
        for message in self.inbox.take():
            self._on_message(message, now)
        for handle in list(self.runs.values()):
            deadline = handle.machine.next_deadline()
            if deadline is not None and deadline <= now:
                self._guard(handle, handle.machine.on_tick, now)

    def _on_message(self, message: tuple, now: float) -> None:
        kind = message[0]
        if kind == "result":
            entry = self.tasks.pop(message[1], None)
            if entry is None:
                return
            handle, submit = entry
            self.ledger.give_back(submit.executor, submit.op)
            handle.in_flight -= 1
            result: TaskResult = message[2]
            self._guard(handle, handle.machine.on_result, message[1], result, now)
        elif kind == "event":
            entry = self.tasks.get(message[1])
            if entry is not None:
                self._guard(entry[0], entry[0].machine.on_event, message[1], message[2], now)
                if entry[0].on_event is not None:
                    entry[0].on_event(entry[1].node, message[2])
        elif kind == "cancel":  # ("cancel", run_id, why[, grace])
            handle = self.runs.get(message[1])
            if handle is not None:
                grace = message[3] if len(message) > 3 else 0.0
                self._guard(handle, functools.partial(handle.machine.cancel, grace=grace), message[2], now)
        elif kind == "add":
            self.add(message[1])

    # -- liveness -------------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        if self._beating:
            return
        self._beating = True
        threading.Thread(target=self._heartbeat, name="flowlib-heartbeat", daemon=True).start()

    def _heartbeat(self) -> None:
        """Keep the runs' heartbeats fresh (resume and readers tell a live scheduler by them) and
        pick up `flow cancel` requests. A database error is reported, never swallowed."""
        asked: set[str] = set()
        failing = False
        while self._beating:
            run_ids = list(self.runs)
            if run_ids:
                try:
                    for run_id in repo.heartbeat_runs(self.session.engine, run_ids):
                        if run_id not in asked:
                            asked.add(run_id)
                            self.post(("cancel", run_id, "cancelled by `flow cancel`"))
                    if failing:
                        self.on_warning("the heartbeat reaches the database again")
                    failing = False
                except Exception as exc:
                    if not failing:
                        self.on_warning(
                            f"the run heartbeat cannot reach the database ({type(exc).__name__}: {exc}); "
                            "readers may take these runs for interrupted until it does"
                        )
                    failing = True
            time.sleep(HEARTBEAT_S)
