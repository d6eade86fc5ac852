"""The run queue of a server pool: queued runs in the database, claimed by exactly one server;
the runs of a server whose lease expired, adopted by another under the same run id.

Every claim is one transaction that only a queued run (or one whose server lost its lease)
can win: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's write lock
(`BEGIN IMMEDIATE`) on SQLite, and in both an UPDATE conditional on the row still being
claimable, whose row count says who won.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select, update

from flowlib.plan import Plan
from scheduler.runs import new_run_id, record_run
from scheduler.store import repository as repo
from scheduler.store.models import runs, servers

_R, _S = runs.c, servers.c


@contextmanager
def claiming(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the database's write lock on SQLite (PostgreSQL locks rows instead)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.begin()
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def enqueue(
    engine: Engine,
    plan: Plan,
    *,
    snapshot: str,
    user: str,
    executor: str,
    priority: int = 0,
    resumed_from: str | None = None,
    root_run_id: str | None = None,
    reuse_succeeded: bool = False,
    **columns: Any,
) -> str:
    """Record a queued run of `plan` (its code: the snapshot with that digest); return its id."""
    run_id = new_run_id()
    with engine.begin() as conn:
        record_run(
            conn,
            plan,
            run_id,
            status="queued",
            executor=executor,
            root_run_id=root_run_id or run_id,
            resumed_from=resumed_from,
            options={"use_cache": True, **({"reuse_succeeded": True} if reuse_succeeded else {})},
            user=user,
            priority=priority,
            snapshot=snapshot,
            **columns,
        )
    return run_id


def cancel_queued(conn: Connection, run_id: str, why: str) -> bool:
    """End a queued run cancelled before any server claims it; False when one did first."""
    now = time.time()
    done = conn.execute(
        update(runs)
        .where(_R.id == run_id, _R.status == "queued")
        .values(status="cancelled", error=why, ended_at=now, cancel_requested=True)
    )
    if not done.rowcount:
        return False
    repo.cancel_dead_run(conn, run_id, why)
    repo.add_events(
        conn, [{"run_id": run_id, "node": None, "kind": "run_cancelled", "data": None, "time": now}]
    )
    return True


def _taken(server_id: str) -> dict[str, Any]:
    now = time.time()
    return {"server": server_id, "pid": os.getpid(), "host": socket.gethostname(), "heartbeat_at": now}


def claim(engine: Engine, server_id: str, wanted: int) -> list[str]:
    """Claim up to `wanted` queued runs, highest priority first, then in submission order."""
    if wanted <= 0:
        return []
    won = []
    with claiming(engine) as conn:
        query = (
            select(_R.id)
            .where(_R.status == "queued")
            .order_by(_R.priority.desc(), _R.created_at, _R.id)
            .limit(wanted)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for run_id in conn.scalars(query).all():
            now = time.time()
            done = conn.execute(
                update(runs)
                .where(_R.id == run_id, _R.status == "queued")
                .values(status="running", started_at=now, **_taken(server_id))
            )
            if done.rowcount:
                won.append(run_id)
                repo.add_events(
                    conn,
                    [
                        {
                            "run_id": run_id,
                            "node": None,
                            "kind": "run_running",
                            "data": {"server": server_id},
                            "time": now,
                        }
                    ],
                )
    return won


def adoptable(engine: Engine, server_id: str) -> list[tuple[str, str]]:
    """(run id, its server) of the running runs whose server's lease expired (or that has none left)."""
    now = time.time()
    lapsed = select(_S.id).where(_S.lease_expires_at < now)
    with engine.connect() as conn:
        rows = conn.execute(
            select(_R.id, _R.server).where(
                _R.status == "running",
                _R.server.is_not(None),
                _R.server != server_id,
                or_(_R.server.in_(lapsed), ~select(_S.id).where(_S.id == _R.server).exists()),
            )
        ).all()
    return [(row.id, row.server) for row in rows]


def adopt(engine: Engine, run_id: str, old_server: str, server_id: str, lease_s: float) -> bool:
    """Take over a run of a server that is gone; False when another server took it first.

    The adopter's own lease is renewed in the same transaction: after a database outage longer
    than the lease every lease has lapsed, and a run adopted by a server whose lease still reads
    lapsed would at once be adoptable again, by the server it was taken from."""
    with claiming(engine) as conn:
        done = conn.execute(
            update(runs)
            .where(and_(_R.id == run_id, _R.server == old_server, _R.status == "running"))
            .values(**_taken(server_id))
        )
        if done.rowcount:
            conn.execute(
                update(servers).where(_S.id == server_id).values(lease_expires_at=time.time() + lease_s)
            )
            repo.add_events(
                conn,
                [
                    {
                        "run_id": run_id,
                        "node": None,
                        "kind": "run_adopted",
                        "data": {"from": old_server, "by": server_id},
                        "time": time.time(),
                    }
                ],
            )
        return bool(done.rowcount)


# -- leases --------------------------------------------------------------------------------------------------
def register(engine: Engine, server_id: str, lease_s: float, url: str | None) -> None:
    from sqlalchemy import insert

    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            insert(servers).values(
                id=server_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                url=url,
                started_at=now,
                lease_expires_at=now + lease_s,
            )
        )


def renew(engine: Engine, server_id: str, lease_s: float) -> None:
    with engine.begin() as conn:
        conn.execute(update(servers).where(_S.id == server_id).values(lease_expires_at=time.time() + lease_s))


def give_up(engine: Engine, server_id: str) -> None:
    """This server stops: its lease ends now, so what it still runs is adopted at once."""
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            update(servers).where(_S.id == server_id).values(lease_expires_at=now - 1, stopped_at=now)
        )
