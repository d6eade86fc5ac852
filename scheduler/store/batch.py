"""What one scheduling step learned, written to the database in one transaction."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine

from scheduler.store import repository as repo
from scheduler.store import walcheckpoint

REUSE_S = 5.0
KINDS = ("fingerprints", "attempts", "artifacts", "cache", "metrics", "checkpoints", "events")


class Batch:
    """Pending rows of one run; `flush` commits them together (crash safety depends on its order)."""

    def __init__(self, engine: Engine, run_id: str) -> None:
        self.engine, self.run_id = engine, run_id
        self.rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        self.nodes: dict[int, dict[str, Any]] = {}  # node row id -> columns to set
        # (node, status, time) in order: a row per change cost a fifth of a 10,000-node run
        self.changes: list[tuple[str, str, float]] = []
        self._conn: Connection | None = None
        self._used_at = 0.0
        self._checkpointer = walcheckpoint.WalCheckpointer(engine) if walcheckpoint.wanted(engine) else None

    def __bool__(self) -> bool:
        return bool(self.nodes) or bool(self.changes) or any(self.rows.values())

    def node(self, row_id: int, **columns: Any) -> None:
        self.nodes.setdefault(row_id, {"row_id": row_id}).update(columns)

    def add(self, kind: str, row: dict[str, Any]) -> None:
        self.rows[kind].append(row)

    def artifact(self, node: str, ref: dict[str, Any], data: bytes | None = None) -> None:
        """Index an artifact; `data` holds the bytes of one kept in the database."""
        self.add(
            "artifacts",
            {
                "digest": ref["digest"],
                "serializer": ref["serializer"],
                "serializer_version": ref["serializer_version"],
                "size": ref["size"],
                "created_at": time.time(),
                "run_id": self.run_id,
                "node": node,
                "data": data,
            },
        )

    def state(self, node: str, status: str) -> None:
        """Log a node's state change; a flush writes its changes as one `node_states` event."""
        self.changes.append((node, status, time.time()))

    def event(self, node: str | None, kind: str, data: Any) -> None:
        self.add(
            "events", {"run_id": self.run_id, "node": node, "kind": kind, "data": data, "time": time.time()}
        )

    def flush(self) -> None:
        if not self:
            return
        if self.changes:
            self.event(None, "node_states", self.changes)
        with self.transaction() as conn:
            self._write(conn, self.rows)
        if self._checkpointer is not None:
            self._checkpointer.nudge()
        self.rows = {kind: [] for kind in KINDS}
        self.nodes = {}
        self.changes = []

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction on the run's connection (reads of the scheduler's hot path use it too)."""
        conn = self._connection()
        try:
            with conn.begin():
                yield conn
        except BaseException:
            self.close()  # a broken connection is not reused
            raise
        self._used_at = time.monotonic()

    def close(self) -> None:
        """Give the connection back to the pool (the next flush takes one again)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if self._checkpointer is not None and not conn.invalidated:
                try:
                    walcheckpoint.take_back(conn)
                except Exception:
                    conn.invalidate()  # not back to the pool with its checkpoints off
            conn.close()

    def stop(self) -> None:
        """The run is over: give the connection back and stop checkpointing."""
        self.close()
        if self._checkpointer is not None:
            # not waiting: a checkpoint under way (one syncs megabytes) ends by itself; the run
            # waited for one up to 0.07 s, and SQLite takes one cut short by an exit in its stride
            self._checkpointer.stop(wait=False)

    def _connection(self) -> Connection:
        # One connection kept between flushes that follow each other closely: taking one from
        # the pool per flush cost a tenth of a chain's step.
        # After a quiet spell it goes back, so the pool's checks (pre-ping) run on a fresh one.
        if self._conn is not None and time.monotonic() - self._used_at > REUSE_S:
            self.close()
        if self._conn is None:
            self._conn = self.engine.connect()
            if self._checkpointer is not None:
                walcheckpoint.hand_over(self._conn)
        return self._conn

    def _write(self, conn: Connection, rows: dict[str, list[dict[str, Any]]]) -> None:
        repo.add_fingerprints(conn, rows["fingerprints"])
        repo.update_nodes(conn, list(self.nodes.values()))
        repo.add_attempts(conn, rows["attempts"])
        repo.add_artifacts(conn, rows["artifacts"])
        repo.put_cache_entries(conn, list({row["key"]: row for row in rows["cache"]}.values()))
        repo.add_metrics(conn, rows["metrics"])
        repo.add_checkpoints(conn, rows["checkpoints"])
        repo.add_events(conn, rows["events"])
