"""SQLite's write-ahead log checkpointed on a thread of its own, off the scheduler's path.

By default the connection whose commit pushes the log past 1,000 pages copies them
into the database file and syncs it, inside that commit: every few dozen steps the
scheduler stalled for milliseconds (a tenth of a chain's time). This thread copies
them while the scheduler goes on. The run's connection still checkpoints itself once
the log passes RUN_PAGES, by when most of it is copied already: a passive checkpoint
alone never catches up with a writer that commits every millisecond, and only a
checkpoint that does lets the log start over (it grew to 150 MB in a 3,000-node chain).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, Engine

GAP_S = 0.1  # the least time between two checkpoints: each syncs the files, so they are batched
DEFAULT_PAGES = 1000  # SQLite's own wal_autocheckpoint
RUN_PAGES = 4000  # the run's connection's: a log of about 16 MB (commit cost per page fell as it rose)


def wanted(engine: Engine) -> bool:
    """Whether the engine writes a SQLite file (a memory database has no log)."""
    url = engine.url
    memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    return url.get_backend_name() == "sqlite" and not memory


def hand_over(conn: Connection) -> None:
    """Let `conn`'s commits checkpoint only a long log; a WalCheckpointer copies it meanwhile."""
    _pragma(conn, f"wal_autocheckpoint={RUN_PAGES}")


def take_back(conn: Connection) -> None:
    """Give `conn` SQLite's default back before it returns to the pool."""
    _pragma(conn, f"wal_autocheckpoint={DEFAULT_PAGES}")


def _pragma(conn: Connection, setting: str) -> None:
    cursor = conn.connection.cursor()  # the driver's own: no SQLAlchemy transaction begins
    try:
        cursor.execute(f"PRAGMA {setting}")
    finally:
        cursor.close()


class WalCheckpointer:
    """Runs a passive checkpoint after commits, at most one per GAP_S (each syncs the database
    file). Its thread starts with the first commit and ends with `stop`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: tuple[int, int, int] | None = None  # SQLite's (busy, log pages, pages copied)

    def nudge(self) -> None:
        """Something was committed: checkpoint soon."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="flowlib-wal-checkpoint", daemon=True)
            self._thread.start()
        if not self._due.is_set():  # most commits find it set already: no lock taken, no notify
            self._due.set()

    def stop(self, *, wait: bool = True) -> None:
        """No checkpoint starts after this; with `wait`, return once a running one is done."""
        self._stopping.set()
        self._due.set()
        if self._thread is not None and wait:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            self._due.wait()
            if self._stopping.is_set():
                return
            self._due.clear()
            try:
                self.last = self._checkpoint()
            except Exception:  # a busy or locked database: the next nudge tries again
                logging.getLogger(__name__).debug("WAL checkpoint failed", exc_info=True)
            if self._stopping.wait(GAP_S):
                return

    def _checkpoint(self) -> tuple[int, int, int]:
        conn = self.engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                # PASSIVE: copies what no reader needs and never waits for the writer
                busy, pages, copied = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                return busy, pages, copied
            finally:
                cursor.close()
        finally:
            conn.close()
