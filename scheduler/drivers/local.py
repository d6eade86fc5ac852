"""The foreground driver: one run executed by the process that started it (`flow run`, `flowlib.run`).

This is where the process is the run's own: Ctrl-C cancels it (a second one stops waiting
for the cancellation), and the run's long-lived objects are kept out of the cyclic
garbage collector's full passes while it goes on.
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
from flowlib.plan import Plan
from flowlib.store import ArtifactStore
from scheduler.drivers.driver import Driver, RunHandle
from scheduler.drivers.tasks import TaskSpecs
from scheduler.engine.machine import RunMachine
from scheduler.store.batch import RunRows, Session
from scheduler.store.blobs import Blobs
from scheduler.store.lookups import StoreLookups

KEEP_AFTER_RUN = 32 * 1024 * 1024  # bytes of small artifacts a run's result may hold on to


def run_in_foreground(
    plan: Plan,
    *,
    engine: Engine,
    store: ArtifactStore,
    config: Config,
    executors: dict[str, Executor],
    run_id: str,
    root_run_id: str,
    ids: dict[str, int],
    options: Any,
    reuse: dict[str, dict[str, Any]] | None,
    reasons: dict[str, list[str]] | None = None,
) -> Blobs:
    """Execute a recorded run here to its end; return the small artifacts it saw (for its result)."""
    blobs = Blobs(engine)
    session = Session(engine)
    machine = RunMachine(
        plan,
        run_id=run_id,
        root_run_id=root_run_id,
        lookups=StoreLookups(session, store, blobs),
        default_executor=options.executor or config.executor,
        use_cache=options.use_cache,
        fail_fast=options.fail_fast,
        reuse=reuse,
        reasons=reasons,
    )
    rows = RunRows(run_id, ids, store)
    specs = TaskSpecs(plan, root_run_id=root_run_id, store_url=store.url, fsync=config.fsync, blobs=blobs)
    driver = Driver(executors, session=session)
    driver.add(
        RunHandle(run_id, machine, rows, specs, progress=options.progress, max_parallel=options.max_parallel)
    )
    previous = None
    stopping = threading.Event()

    def on_sigint(_signum: int, _frame: Any) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C stops waiting for the cancellation
        stopping.set()
        driver.post(("cancel", run_id, "interrupted (Ctrl-C)"))

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    # The plan and node states live for the whole run: kept out of the cyclic collector's full
    # passes, which otherwise walk all of them again and again (~10 % of a 10,000-node run).
    gc.freeze()
    try:
        driver.run()
    except KeyboardInterrupt:
        machine.cancel("interrupted (Ctrl-C)", time.time())
        driver.stop_all()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        gc.unfreeze()
        driver.close()
        # the newest small artifacts (the outputs among them) stay for reading the result
        blobs.shrink(KEEP_AFTER_RUN)
    return blobs
