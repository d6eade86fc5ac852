"""Commit what runs decided (engine.writes.Writes): one transaction per run per scheduling step.

A Session is a driver's line to the database: one connection kept between commits that
follow each other closely, and SQLite's log checkpointed on a thread of its own. Crash
safety depends on the order here: artifacts reach the store before the commit that
names them, and the driver starts nothing that depends on a commit before it returns.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, select, update

from scheduler.engine.writes import Writes
from scheduler.store import bulk, walcheckpoint
from scheduler.store import repository as repo
from scheduler.store.models import nodes, runs
from scheduler.store.outage import Outage

T = TypeVar("T")

REUSE_S = 5.0


class Session:
    """A connection for the scheduler's hot path: writes and the reads between them."""

    def __init__(self, engine: Engine, outage: Outage | None = None) -> None:
        self.engine = engine
        self.outage = outage or Outage(limit_s=0)  # a scheduler's session waits (see drivers)
        self._conn: Connection | None = None
        self._used_at = 0.0
        self._checkpointer = walcheckpoint.WalCheckpointer(engine) if walcheckpoint.wanted(engine) else None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        conn = self._connection()
        try:
            with conn.begin():
                yield conn
        except BaseException:
            self.close()  # a broken connection is not reused
            raise
        self._used_at = time.monotonic()

    def run(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` in one transaction; while the database is unreachable, the whole
        transaction is tried again on a fresh connection (see scheduler.store.outage)."""

        def attempt() -> T:
            with self.transaction() as conn:
                return work(conn)

        return self.outage.ride(attempt)

    def committed(self) -> None:
        """Something was committed: the log wants a checkpoint soon."""
        if self._checkpointer is not None:
            self._checkpointer.nudge()

    def close(self) -> None:
        """Give the connection back to the pool (the next transaction takes one again)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if self._checkpointer is not None and not conn.invalidated:
                try:
                    walcheckpoint.take_back(conn)
                except Exception:
                    conn.invalidate()  # not back to the pool with its checkpoints off
            conn.close()

    def stop(self) -> None:
        """The driver is done: give the connection back and stop checkpointing."""
        self.close()
        if self._checkpointer is not None:
            # not waiting: a checkpoint under way (one syncs megabytes) ends by itself
            self._checkpointer.stop(wait=False)

    def _connection(self) -> Connection:
        # One connection kept between commits that follow each other closely; after a quiet
        # spell it goes back, so the pool's checks (pre-ping) run on a fresh one.
        if self._conn is not None and time.monotonic() - self._used_at > REUSE_S:
            self.close()
        if self._conn is None:
            self._conn = self.engine.connect()
            if self._checkpointer is not None:
                walcheckpoint.hand_over(self._conn)
        return self._conn


class RunTakenOver(Exception):
    """A pool's run was adopted by another server (this one's lease lapsed): it records no more here."""


class RunRows:
    """One run's node ids by name (rows are updated by id), and how its writes are committed.

    With `owner` (a pool's server id), every commit first checks in its own transaction that the
    run is still that server's: after an outage longer than its lease, another server may have
    adopted it, and two servers must never both record one run.
    """

    def __init__(self, run_id: str, ids: dict[str, int], store: Any = None, owner: str | None = None) -> None:
        self.run_id, self.ids, self.store, self.owner = run_id, ids, store, owner

    def commit(self, session: Session, writes: Writes) -> None:
        if not writes and not writes.store_writes:
            return
        self.write_files(writes)
        if writes.changes:
            writes.event(None, "node_states", writes.changes, time.time())
        # ids learnt only once committed: a transaction retried after an outage inserts again
        self.ids.update(session.run(lambda conn: self._write(conn, writes)))
        session.committed()

    def write_files(self, writes: Writes) -> None:
        """Write the artifacts that go to the store (a map's big manifests), once."""
        for ref, data in writes.store_writes:
            self.store.write(ref, data)
        writes.store_writes = []

    def _write(self, conn: Connection, writes: Writes) -> dict[str, int]:
        if self.owner is not None:
            held = conn.execute(
                update(runs)
                .where(runs.c.id == self.run_id, runs.c.server == self.owner)
                .values(server=self.owner)
            )
            if not held.rowcount:
                raise RunTakenOver(f"another server adopted run {self.run_id}; this one stops running it")
        rows = writes.rows
        new_ids: dict[str, int] = {}
        inserted: set[str] = set()
        if writes.new_nodes:
            # an adopted run's map items may be recorded already, by the server that ran it before
            fresh = [row for row in writes.new_nodes if row["name"] not in self.ids]
            inserted = {row["name"] for row in fresh}
            edges = [(src, dst) for src, dst in writes.new_edges if dst in inserted or src in inserted]
            # what was decided for a new node since (queued, with its key) goes in its INSERT,
            # not in an UPDATE of the row just inserted: half a map's node writes. (`writes` is
            # left as it is: a commit retried after an outage writes it again.)
            fresh = [{**row, **writes.nodes.get(row["name"], {})} for row in fresh]
            repo.insert_nodes(conn, self.run_id, fresh, edges)
            for chunk in repo.chunks(list(inserted)):
                found = conn.execute(
                    select(nodes.c.name, nodes.c.id).where(
                        nodes.c.run_id == self.run_id, nodes.c.name.in_(chunk)
                    )
                )
                new_ids.update(found.all())  # type: ignore[arg-type]
        ids = {**self.ids, **new_ids} if new_ids else self.ids
        writers = [
            (repo.add_attempts, rows["attempts"]),
            (repo.add_artifacts, rows["artifacts"]),
            (repo.put_cache_entries, rows["cache"]),
            (repo.add_fingerprints, rows["fingerprints"]),
        ]
        for write, batch in writers:  # many rows go by COPY on PostgreSQL: not in the pipeline
            if bulk.by_copy(conn, batch):
                write(conn, batch)
        with _pipelined(conn):
            repo.update_nodes(
                conn,
                [
                    {"row_id": ids[name], **columns}
                    for name, columns in writes.nodes.items()
                    if name not in inserted
                ],
            )
            for write, batch in writers:
                if not bulk.by_copy(conn, batch):
                    write(conn, batch)
            repo.add_metrics(conn, rows["metrics"])
            repo.add_checkpoints(conn, rows["checkpoints"])
            repo.add_rows(conn, repo.log_chunks, rows["log_chunks"])
            repo.add_events(conn, rows["events"])
        return new_ids


def _pipelined(conn: Connection) -> Any:
    """On PostgreSQL (psycopg 3), send a commit's statements without waiting for each answer: one
    round trip for them all instead of one each."""
    driver = conn.connection.driver_connection
    pipeline = getattr(driver, "pipeline", None)
    return (
        pipeline() if conn.dialect.name == "postgresql" and pipeline is not None else contextlib.nullcontext()
    )
