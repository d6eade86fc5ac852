"""The foreground driver: runs executed by the process that started them (`flow run`, `flowlib.run`).

This is where the process is the runs' own: Ctrl-C cancels them (a second one stops waiting
for the cancellation), and their long-lived objects are kept out of the cyclic garbage
collector's full passes while they go on.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from typing import Any

from sqlalchemy import Engine

from executors.base import Executor
from flowlib.config import Config
from flowlib.errors import RunInterrupted
from flowlib.plan import Plan
from flowlib.store import ArtifactStore
from scheduler.drivers.driver import Driver, RunHandle, print_warning
from scheduler.drivers.tasks import TaskSpecs
from scheduler.engine.machine import RunMachine
from scheduler.store.batch import RunRows, Session
from scheduler.store.blobs import Blobs
from scheduler.store.lookups import StoreLookups
from scheduler.store.outage import Outage

KEEP_AFTER_RUN = 32 * 1024 * 1024  # bytes of small artifacts a run's result may hold on to
REFREEZE_NODES = 1000  # new node states (a map expanded at run time) that call for gc.freeze() again


class _Refreeze:
    """Freezes again once the runs' node states grew by many: a map's items, expanded while the
    run goes on, live to its end like the states frozen at its start. Only then, not after every
    step, so that what user code running inline leaves for the collector stays collectable."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.frozen_at = self._states()

    def _states(self) -> int:
        return sum(len(handle.machine.states) for handle in self.driver.runs.values())

    def __call__(self) -> None:
        states = self._states()
        if states - self.frozen_at >= REFREEZE_NODES:
            gc.freeze()
            self.frozen_at = states
        else:  # fewer once a run ended
            self.frozen_at = min(self.frozen_at, states)


def make_handle(
    plan: Plan,
    *,
    run_id: str,
    root_run_id: str,
    ids: dict[str, int],
    session: Session,
    store: ArtifactStore,
    blobs: Blobs,
    fsync: bool,
    default_executor: str,
    use_cache: bool = True,
    fail_fast: bool = False,
    reuse: dict[str, dict[str, Any]] | None = None,
    reasons: dict[str, list[str]] | None = None,
    prior_attempts: dict[str, int] | None = None,
    progress: Any = None,
    max_parallel: int | None = None,
    owner: str | None = None,
) -> RunHandle:
    """A recorded run, ready for a driver: its state machine, its rows, its task specs."""
    machine = RunMachine(
        plan,
        run_id=run_id,
        root_run_id=root_run_id,
        lookups=StoreLookups(session, store, blobs),
        default_executor=default_executor,
        use_cache=use_cache,
        fail_fast=fail_fast,
        reuse=reuse,
        reasons=reasons,
        prior_attempts=prior_attempts,
    )
    specs = TaskSpecs(plan, root_run_id=root_run_id, store=store, fsync=fsync, blobs=blobs)
    return RunHandle(
        run_id,
        machine,
        RunRows(run_id, ids, store, owner),
        specs,
        progress=progress,
        max_parallel=max_parallel,
    )


def run_in_foreground(
    recorded: list[tuple[Any, str, dict[str, int]]],
    *,
    engine: Engine,
    store: ArtifactStore,
    config: Config,
    executors: dict[str, Executor],
    options: Any,
) -> Blobs:
    """Execute recorded runs ((launch, run id, node ids) each) here to their end; return the small
    artifacts they saw (for reading their results)."""
    outage = Outage(config.db_outage_s, warn=print_warning)
    blobs = Blobs(engine, outage=outage)
    session = Session(engine, outage)
    driver = Driver(executors, session=session)
    handles = []
    for launch, run_id, ids in recorded:
        handle = make_handle(
            launch.plan,
            run_id=run_id,
            root_run_id=launch.root_run_id or run_id,
            ids=ids,
            session=session,
            store=store,
            blobs=blobs,
            fsync=config.fsync,
            default_executor=options.executor or config.executor,
            use_cache=options.use_cache,
            fail_fast=options.fail_fast,
            reuse=launch.reuse,
            reasons=launch.reasons,
            progress=options.progress,
            max_parallel=options.max_parallel,
        )
        driver.add(handle)
        handles.append(handle)
    previous = None
    stopping = threading.Event()

    def on_sigint(_signum: int, _frame: Any) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C stops waiting for the cancellation
        stopping.set()
        for run_id in list(driver.runs):
            driver.post(("cancel", run_id, "interrupted (Ctrl-C)"))

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    # The plans and node states live for the whole run: kept out of the cyclic collector's full
    # passes, which otherwise walk all of them again and again (~10 % of a 10,000-node run).
    gc.freeze()
    driver.after_advance = _Refreeze(driver)
    try:
        driver.run()
    except KeyboardInterrupt:
        for handle in driver.runs.values():
            handle.machine.cancel("interrupted (Ctrl-C)", time.time())
        driver.stop_all()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        gc.unfreeze()
        driver.close()
        # the newest small artifacts (the outputs among them) stay for reading the result
        blobs.shrink(KEEP_AFTER_RUN)
    lost = [handle for handle in handles if handle.status == "interrupted"]
    if lost:
        raise RunInterrupted(
            "; ".join(
                f"run {h.run_id} stopped: {h.error}; `flow resume {h.run_id}` continues it" for h in lost
            )
        )
    return blobs
