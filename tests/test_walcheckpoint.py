"""The run's SQLite log is checkpointed on a thread of its own, not inside the scheduler's commits."""

from __future__ import annotations

import os
import threading
import time

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from scheduler.engine.writes import Writes
from scheduler.store import db, walcheckpoint
from scheduler.store.batch import RunRows, Session


class Batch:
    """A run's rows committed through a driver's session, as the scheduler does."""

    def __init__(self, engine, run_id: str) -> None:
        self.session, self.rows, self.writes = Session(engine), RunRows(run_id, {}), Writes(run_id)

    def event(self, node, kind, data) -> None:
        self.writes.event(node, kind, data, time.time())

    def flush(self) -> None:
        self.rows.commit(self.session, self.writes.take())

    def transaction(self):
        return self.session.transaction()

    def stop(self) -> None:
        self.session.stop()


def _pragma(conn, setting: str) -> None:
    conn.connection.cursor().execute(f"PRAGMA {setting}").close()


def _autocheckpoint(conn) -> int:
    cursor = conn.connection.cursor()
    try:
        return cursor.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    finally:
        cursor.close()


def test_the_batch_connection_checkpoints_only_a_long_log_and_gives_the_default_back(tmp_path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'flow.db'}")
    batch = Batch(engine, "run-1")
    batch.event(None, "note", {"n": 1})
    batch.flush()
    with batch.transaction() as conn:
        assert _autocheckpoint(conn) == walcheckpoint.RUN_PAGES
    batch.stop()
    with engine.connect() as conn:  # the pool hands out the connection the batch used
        assert _autocheckpoint(conn) == walcheckpoint.DEFAULT_PAGES
        assert conn.execute(text("select count(*) from events")).scalar() == 1


def test_the_checkpointer_copies_the_whole_log_into_the_database(tmp_path) -> None:
    path = tmp_path / "flow.db"
    engine = db.connect(f"sqlite:///{path}")
    with engine.connect() as conn:
        _pragma(conn, "wal_autocheckpoint=0")
        for _ in range(30):  # ~2,000 pages over many commits, none checkpointed
            conn.execute(
                text("insert into events (run_id, kind, data, time) values (:r, :k, :d, 0)"),
                [{"r": "run-1", "k": "note", "d": '"' + "x" * 2000 + '"'} for _ in range(100)],
            )
            conn.commit()
        walcheckpoint.take_back(conn)
    assert os.path.getsize(f"{path}-wal") > walcheckpoint.DEFAULT_PAGES * 4096
    before = os.path.getsize(path)
    checkpointer = walcheckpoint.WalCheckpointer(engine)
    try:
        checkpointer.nudge()
        deadline = time.monotonic() + 10
        while checkpointer.last is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        checkpointer.stop()
    assert checkpointer.last is not None
    busy, pages, copied = checkpointer.last
    assert (busy, copied) == (0, pages) and pages > walcheckpoint.DEFAULT_PAGES
    assert os.path.getsize(path) > before + 4 * 1024 * 1024


def test_the_log_stays_bounded_while_a_run_commits_without_pause(tmp_path) -> None:
    """Passive checkpoints alone never let the log start over under a steady writer."""
    path = tmp_path / "flow.db"
    batch = Batch(db.connect(f"sqlite:///{path}"), "run-1")
    try:
        for i in range(6000):  # ~2 pages a commit: 12,000 pages in all
            batch.event(None, "note", {"i": i, "pad": "x" * 3000})
            batch.flush()
    finally:
        batch.stop()
    # Not exactly RUN_PAGES: while the thread checkpoints, the connection's own attempt is skipped.
    frame = 4096 + 24
    assert os.path.getsize(f"{path}-wal") <= 32 + 2 * walcheckpoint.RUN_PAGES * frame


def test_no_thread_until_a_commit_and_none_for_a_memory_database(tmp_path) -> None:
    def checkpointers() -> set[threading.Thread]:
        return {thread for thread in threading.enumerate() if thread.name == "flowlib-wal-checkpoint"}

    others = checkpointers()  # earlier tests' threads, which end on their own time
    batch = Batch(db.connect(f"sqlite:///{tmp_path / 'flow.db'}"), "run-1")
    assert checkpointers() - others == set()  # a run that never starts leaves nothing behind
    batch.event(None, "note", {})
    batch.flush()
    ours = checkpointers() - others
    assert len(ours) == 1, ours
    batch.stop()  # the thread ends by itself, without the run waiting for it
    (thread,) = ours
    thread.join(timeout=10)
    assert not thread.is_alive()
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"):
        assert not walcheckpoint.wanted(create_engine(url, poolclass=NullPool))
    assert walcheckpoint.wanted(create_engine(f"sqlite:///{tmp_path / 'other.db'}"))
