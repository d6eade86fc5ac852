"""Where a sweep's trials run. The sweep loop sees only `Launcher`; `LocalLauncher` runs the trials
in this process, side by side through one driver over one set of executors and one ledger.

A launcher that submits trials to a `flow server` pool implements the same methods over the
server's API (submit and resume runs, cancel, poll runs, nodes and metrics) and is picked where
`scheduler.sweeps.start` makes the launcher.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from executors.stopping import GRACE_S
from flowlib.config import Config
from flowlib.errors import FlowError
from flowlib.plan import Plan
from flowlib.results import FINAL
from scheduler.runs import (
    Launch,
    check_resources,
    connect,
    executor_names,
    new_run_id,
    open_store,
    record_run,
    start_executors,
)
from scheduler.store.models import nodes
from scheduler.sweeps import catalog
from scheduler.sweeps.trials import objective_value

FINAL_STATES = {status.value for status in FINAL}


@dataclass(frozen=True)
class Ended:
    """A trial's run ended."""

    run_id: str
    status: str
    error: str | None


@dataclass(frozen=True)
class Point:
    """A step of the watched metric, as a trial's running operator logged it."""

    run_id: str
    step: int
    value: float


class Launcher(Protocol):
    """How a sweep starts, stops and watches its trials' runs."""

    def launch(self, plan: Plan, *, sweep: str, trial: int) -> str:
        """Record and start a run of `plan` as trial `trial` of `sweep`; return its run id."""

    def resume(self, run_id: str, *, sweep: str, trial: int) -> str:
        """Start a resume of an unfinished trial's run (its finished nodes reused); return the new run id."""

    def cancel(self, run_id: str, why: str) -> None:
        """Stop a run: its running operators are stopped (killed if they do not end soon), it
        ends `cancelled`."""

    def wait(self, timeout: float) -> list[Ended | Point]:
        """What happened since the last call, in order (runs that ended, steps of the watched
        metric), waiting up to `timeout` seconds for something."""

    def trial_runs(self, sweep: str) -> dict[int, catalog.TrialRun]:
        """Trial number -> its newest run."""

    def settled(self, run_id: str, names: Collection[str]) -> bool:
        """Whether the run's nodes `names` have all ended, and that is committed (their cache
        entries with it)."""

    def objective(self, run_id: str, key: str) -> float:
        """A succeeded run's objective value (see trials.objective_value)."""

    def close(self) -> None:
        """Stop the executors; runs still going are left to read `interrupted`."""


class LocalLauncher:
    """Trials run here: a driver on a thread of its own, fed runs as the sweep loop starts them.
    `watch` names the metric whose steps `wait` hands back (for the pruner), as the driver gets them."""

    def __init__(
        self, config: Config, first: Plan, *, executor: str | None = None, watch: str | None = None
    ) -> None:
        from scheduler.drivers.driver import Driver, print_warning
        from scheduler.store.batch import Session
        from scheduler.store.blobs import Blobs
        from scheduler.store.outage import Outage

        self.config, self.watch = config, watch
        self.default = executor or config.executor
        self.executors = start_executors(executor_names(first, self.default), config)
        try:
            check_resources(first, self.executors, self.default)
            self.engine = connect(config)
            self.store = open_store(config)
        except BaseException:
            self._shutdown()
            raise
        outage = Outage(config.db_outage_s, warn=print_warning)
        self.blobs = Blobs(self.engine, outage=outage)  # the driver's, for the tasks it hands out
        self.reading = Blobs(self.engine)  # this thread's, for reading objectives
        self.session = Session(self.engine, outage)
        self.driver = Driver(self.executors, session=self.session)
        self.driver.serving = True  # trials are posted to it as the sweep goes on
        self._events: queue.SimpleQueue[Ended | Point | None] = queue.SimpleQueue()
        self._closing = False
        self._crash: BaseException | None = None
        self._thread = threading.Thread(target=self._drive, name="flowlib-sweep-driver", daemon=True)
        self._thread.start()

    def _drive(self) -> None:
        try:
            self.driver.run(until=lambda: self._closing)
        except BaseException as exc:
            self._crash = exc
            self._events.put(None)
        finally:
            self.driver.close()

    # -- starting and stopping runs ----------------------------------------------------------------
    def launch(self, plan: Plan, *, sweep: str, trial: int) -> str:
        return self._start(Launch(plan), sweep=sweep, trial=trial)

    def resume(self, run_id: str, *, sweep: str, trial: int) -> str:
        from scheduler.engine.resume import reuse_of
        from scheduler.resuming import mark_interrupted, plan_for

        run, plan, steps = plan_for(run_id, self.config)
        mark_interrupted(self.engine, run)
        launch = Launch(
            plan,
            resumed_from=run.id,
            root_run_id=run.root_run_id or run.id,
            reuse=reuse_of(steps),
            reasons={step.name: step.reasons for step in steps},
        )
        return self._start(launch, sweep=sweep, trial=trial)

    def _start(self, launch: Launch, *, sweep: str, trial: int) -> str:
        from scheduler.drivers.local import make_handle

        plan = launch.plan
        missing = executor_names(plan, self.default) - set(self.executors)
        if missing:
            raise FlowError(
                f"this trial's operators name executors the sweep did not start: {', '.join(sorted(missing))}"
            )
        check_resources(plan, self.executors, self.default)
        run_id = new_run_id()
        root = launch.root_run_id or run_id
        with self.engine.begin() as conn:
            ids = record_run(
                conn,
                plan,
                run_id,
                status="running",
                executor=self.default,
                root_run_id=root,
                resumed_from=launch.resumed_from,
                reasons=launch.reasons,
                options={"use_cache": True, "fail_fast": False},
                sweep=sweep,
                trial=trial,
            )
        handle = make_handle(
            plan,
            run_id=run_id,
            root_run_id=root,
            ids=ids,
            session=self.session,
            store=self.store,
            blobs=self.blobs,
            fsync=self.config.fsync,
            default_executor=self.default,
            reuse=launch.reuse,
            reasons=launch.reasons,
        )
        handle.on_done = lambda status, error: self._events.put(Ended(run_id, status, error))
        if self.watch is not None:
            handle.on_event = lambda _node, event: self._watched(run_id, event)
        self.driver.post(("add", handle))
        return run_id

    def _watched(self, run_id: str, event: Any) -> None:
        """On the driver's thread, as a worker reports it: only the watched metric's steps pass."""
        data = event.data
        if event.kind == "metric" and data.get("name") == self.watch and data.get("step") is not None:
            self._events.put(Point(run_id, int(data["step"]), float(data["value"])))

    def cancel(self, run_id: str, why: str) -> None:
        # a pruned trial's operator is asked to stop and its worker kept warm for the next trial
        self.driver.post(("cancel", run_id, why, GRACE_S))

    def wait(self, timeout: float) -> list[Ended | Point]:
        try:
            found = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                found.append(self._events.get_nowait())
            except queue.Empty:
                break
        if None in found:
            crash = self._crash
            raise FlowError(f"the sweep's scheduler stopped: {type(crash).__name__}: {crash}")
        return [item for item in found if item is not None]

    # -- reading what the runs recorded ---------------------------------------------------------------
    def trial_runs(self, sweep: str) -> dict[int, catalog.TrialRun]:
        return catalog.trial_runs(self.engine, sweep)

    def settled(self, run_id: str, names: Collection[str]) -> bool:
        query = select(nodes.c.name, nodes.c.status).where(
            nodes.c.run_id == run_id, nodes.c.name.in_(list(names))
        )
        with self.engine.connect() as conn:
            statuses = dict(conn.execute(query).tuples().all())
        return all(statuses.get(name) in FINAL_STATES for name in names)

    def objective(self, run_id: str, key: str) -> float:
        return objective_value(self.engine, self.reading.reader(self.store), run_id, key)

    def close(self) -> None:
        self._closing = True
        self.driver.post(("stop",))  # wakes the driver, which then sees it should stop
        self._thread.join(timeout=30)
        self._shutdown()

    def _shutdown(self) -> None:
        for executor in self.executors.values():
            executor.shutdown()
