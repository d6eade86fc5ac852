"""A server's scheduler: it keeps its lease, claims queued runs, adopts the runs of servers that
died, fires schedules, and executes what it holds on one driver over the server's executors."""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from executors.base import Executor
from flowlib.store import ArtifactStore
from scheduler.drivers.driver import Driver
from scheduler.server import queue
from scheduler.server.execution import prepare
from scheduler.store import repository as repo
from scheduler.store.batch import Session
from scheduler.store.blobs import Blobs
from scheduler.store.outage import Outage

log = logging.getLogger("flowlib.server")
CLAIM_EVERY_S = 0.5


@dataclass
class PoolSettings:
    max_runs: int = 4
    lease_s: float = 15.0
    drain_s: float = 30.0
    fsync: bool = True
    default_executor: str = "local"
    db_outage_s: float = 60.0


class ServerPool:
    """Runs this server's share of the pool's work until stopped (see `drain`)."""

    def __init__(
        self,
        engine: Engine,
        store: ArtifactStore,
        executors: dict[str, Executor],
        settings: PoolSettings,
        *,
        home: Path,
        url: str | None = None,
        schedules: Any = None,
    ) -> None:
        self.engine, self.store, self.executors, self.settings = engine, store, executors, settings
        self.snapshots = home / "snapshots"
        self.server_id = f"{uuid.uuid4().hex[:12]}"
        self.url = url
        self.schedules = (
            schedules  # called now and then to fire due schedules (see scheduler.server.deployments)
        )
        self.active: set[str] = set()  # runs this server executes
        self.lock = threading.Lock()
        self.claiming = True
        self.stopped = threading.Event()
        self.wake = threading.Event()
        self.driver: Driver | None = None
        self.session: Session | None = None
        self.outage = Outage(settings.db_outage_s, warn=self._warn)
        self.blobs = Blobs(engine, outage=self.outage)
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        queue.register(self.engine, self.server_id, self.settings.lease_s, self.url)
        for target, name in ((self._drive, "driver"), (self._lease, "lease"), (self._claim_loop, "claims")):
            thread = threading.Thread(target=target, name=f"flowlib-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._ready.wait(30)

    def notify(self) -> None:
        """Something was queued: look for work now."""
        self.wake.set()

    def cancel(self, run_id: str, why: str, grace: float = 0.0) -> None:
        """Stop a run now if this server executes it (else the heartbeat of the one that does
        finds the request in the database); with `grace`, its operators are asked to stop first."""
        with self.lock:
            here = run_id in self.active
        if here and self.driver is not None:
            self.driver.post(("cancel", run_id, why, grace))

    def drain(self) -> None:
        """Stop claiming; let running runs go on for `drain_s`, then release the rest for adoption."""
        self.claiming = False
        deadline = time.monotonic() + self.settings.drain_s
        while time.monotonic() < deadline:
            with self.lock:
                if not self.active:
                    break
            time.sleep(0.2)
        self.stopped.set()
        if self.driver is not None:
            self.driver.post(("wake",))
        for thread in self._threads:
            thread.join(timeout=10)
        queue.give_up(self.engine, self.server_id)  # what is left is adopted by another server at once
        for executor in self.executors.values():
            executor.shutdown()

    # -- threads ---------------------------------------------------------------------------------------
    def _drive(self) -> None:
        # built on this thread: executors whose loop it drives start their workers from it
        self.session = Session(self.engine, self.outage)
        self.driver = Driver(self.executors, session=self.session, on_warning=self._warn)
        self.driver.serving = True
        self._ready.set()
        try:
            self.driver.run(until=self.stopped.is_set)
        except BaseException:
            log.error("the driver stopped: %s", traceback.format_exc())
            raise
        finally:
            self.driver.close()

    def _lease(self) -> None:
        while not self.stopped.wait(self.settings.lease_s / 3):
            try:
                queue.renew(self.engine, self.server_id, self.settings.lease_s)
            except Exception as exc:
                self._warn(f"cannot renew this server's lease: {type(exc).__name__}: {exc}")

    def _claim_loop(self) -> None:
        while not self.stopped.is_set():
            self.wake.wait(CLAIM_EVERY_S)
            self.wake.clear()
            if not self.claiming or self.stopped.is_set():
                continue
            try:
                if self.schedules is not None:
                    self.schedules()
                self._adopt()
                self._claim()
            except Exception:
                self._warn(f"claiming runs failed:\n{traceback.format_exc()}")

    def _room(self) -> int:
        with self.lock:
            return self.settings.max_runs - len(self.active)

    def _claim(self) -> None:
        for run_id in queue.claim(self.engine, self.server_id, self._room()):
            self._start(run_id, adopted=False)

    def _adopt(self) -> None:
        for run_id, old in queue.adoptable(self.engine, self.server_id):
            if self._room() <= 0:
                return
            if queue.adopt(self.engine, run_id, old, self.server_id, self.settings.lease_s):
                log.warning("adopting run %s from server %s", run_id, old)
                self._start(run_id, adopted=True)

    def _start(self, run_id: str, *, adopted: bool) -> None:
        with self.lock:
            self.active.add(run_id)
        try:
            handle = prepare(
                self.engine,
                run_id,
                adopted=adopted,
                session=self.session,  # type: ignore[arg-type]
                store=self.store,
                blobs=self.blobs,
                snapshots=self.snapshots,
                fsync=self.settings.fsync,
                default_executor=self.settings.default_executor,
                on_done=lambda status, error, _id=run_id: self._done(_id),
                owner=self.server_id,
            )
        except Exception as exc:  # a run that cannot even start fails alone, never the server
            self._done(run_id)
            message = f"cannot start: {type(exc).__name__}: {exc}"
            self._warn(f"run {run_id} {message}")
            with self.engine.begin() as conn:
                repo.cancel_dead_run(conn, run_id, message)
                repo.update_run(conn, run_id, status="failed", error=message)
                repo.add_events(
                    conn,
                    [
                        {
                            "run_id": run_id,
                            "node": None,
                            "kind": "run_failed",
                            "data": None,
                            "time": time.time(),
                        }
                    ],
                )
            return
        self.driver.post(("add", handle))  # type: ignore[union-attr]

    def _done(self, run_id: str) -> None:
        with self.lock:
            self.active.discard(run_id)
        self.wake.set()

    def _warn(self, text: str) -> None:
        log.warning("%s", text)
