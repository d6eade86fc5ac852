"""The queries the scheduler and the CLI use; every write path batches its rows."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.orm import Session

from scheduler import bulk
from scheduler.models import (
    Artifact,
    Attempt,
    CacheEntry,
    Checkpoint,
    Edge,
    Event,
    Fingerprint,
    Metric,
    Node,
    Run,
)

# Core columns where a query returns plain rows: ORM-enabled selects cost several times more per row.
_N = Node.__table__.c


def _insert_ignoring_duplicates(
    conn: Connection, model: Any, rows: list[dict[str, Any]], key: str, *, replace: tuple[str, ...] = ()
) -> None:
    """Insert rows; a row whose key exists already updates only the `replace` columns."""
    if rows:
        bulk.executemany(conn, _upsert(conn.dialect.name, model.__table__, key, replace), rows)


@functools.cache
def _upsert(dialect: str, table: Any, key: str, replace: tuple[str, ...]) -> Any:
    """INSERT ... ON CONFLICT, built once per shape: building it per batch cost more than running it."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    statement = dialect_insert(table)
    if replace:
        updates = {name: statement.excluded[name] for name in replace}
        return statement.on_conflict_do_update(index_elements=[key], set_=updates)
    return statement.on_conflict_do_nothing(index_elements=[key])


@functools.cache
def _insert(table: Any) -> Any:
    return insert(table)


# -- runs ----------------------------------------------------------------------------------
def create_run(
    session: Session, values: dict[str, Any], nodes: list[dict[str, Any]], edges: Iterable[tuple[str, str]]
) -> dict[str, int]:
    """Record a run with its nodes and edges; return node name -> row id."""
    session.execute(insert(Run), [values])
    _insert_nodes(session.connection(), values["id"], nodes, edges)
    return node_ids(session, values["id"])


def node_ids(session: Session, run_id: str) -> dict[str, int]:
    return dict(session.execute(select(_N.name, _N.id).where(_N.run_id == run_id)).all())


def add_nodes(
    session: Session, run_id: str, nodes: list[dict[str, Any]], edges: Iterable[tuple[str, str]]
) -> dict[str, int]:
    """Add nodes discovered at run time (map items); return their ids."""
    _insert_nodes(session.connection(), run_id, nodes, edges)
    names = [row["name"] for row in nodes]
    found = session.execute(select(_N.name, _N.id).where(_N.run_id == run_id, _N.name.in_(names)))
    return dict(found.all())


def _insert_nodes(
    conn: Connection, run_id: str, nodes: list[dict[str, Any]], edges: Iterable[tuple[str, str]]
) -> None:
    bulk.executemany(conn, _insert(Node.__table__), [{"run_id": run_id, **row} for row in nodes])
    edge_rows = [{"run_id": run_id, "src": src, "dst": dst} for src, dst in edges]
    bulk.executemany(conn, _insert(Edge.__table__), edge_rows)


def update_run(session: Session, run_id: str, **values: Any) -> None:
    session.execute(update(Run).where(Run.id == run_id).values(**values))


def update_nodes(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Bulk UPDATE by primary key: each row holds `row_id` and the columns to set."""
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_shape.setdefault(tuple(sorted(row)), []).append(row)
    for shape, group in by_shape.items():
        bulk.executemany(conn, _node_update(shape), group)


@functools.cache
def _node_update(columns: tuple[str, ...]) -> Any:
    table = Node.__table__
    values = {name: bindparam(name) for name in columns if name != "row_id"}
    return update(table).where(table.c.id == bindparam("row_id")).values(values)


def cancel_dead_run(session: Session, run_id: str, why: str) -> None:
    """Mark a run whose scheduler died, and its unfinished nodes, cancelled."""
    now = time.time()
    session.execute(
        update(Node)
        .where(Node.run_id == run_id, Node.status.in_(("pending", "queued", "running")))
        .values(status="cancelled", error={"type": "Cancelled", "message": why}, ended_at=now)
    )
    update_run(session, run_id, status="cancelled", error=why, ended_at=now, cancel_requested=True)


def get_run(session: Session, run_id: str) -> Run | None:
    return session.get(Run, run_id)


def find_run(session: Session, run_id: str) -> Run | None:
    """A run by id, or by a unique prefix of its id."""
    run = session.get(Run, run_id)
    if run is not None:
        return run
    matches = session.scalars(select(Run).where(Run.id.like(f"{run_id}%")).limit(2)).all()
    if len(matches) > 1:
        from flowlib.errors import FlowError

        raise FlowError(f"run id prefix '{run_id}' is ambiguous: give more of the id")
    return matches[0] if matches else None


def list_runs(
    session: Session, *, workflow: str | None = None, status: str | None = None, limit: int | None = None
) -> list[Run]:
    query = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
    if workflow:
        query = query.where(Run.workflow == workflow)
    if status:
        query = query.where(Run.status == status)
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


def node_summaries(session: Session, run_id: str) -> list[Any]:
    """What a RunResult shows of each node (plain rows: reading 10,000 ORM objects is slow)."""
    columns = (_N.name, _N.operator, _N.status, _N.cached, _N.attempts, _N.duration_s, _N.error, _N.reasons)
    query = select(*columns).where(_N.run_id == run_id).order_by(_N.position, _N.id)
    return list(session.execute(query))


def node_outputs(session: Session, run_id: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """name -> the outputs recorded for those nodes of a run."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(names), 500):
        query = select(_N.name, _N.outputs).where(
            _N.run_id == run_id, _N.name.in_(names[start : start + 500])
        )
        found.update({name: outputs or {} for name, outputs in session.execute(query)})
    return found


def nodes_of(session: Session, run_id: str) -> list[Node]:
    return list(session.scalars(select(Node).where(Node.run_id == run_id).order_by(Node.position, Node.id)))


def heartbeat(engine: Engine, run_id: str) -> bool:
    """Touch the run's heartbeat; return whether a cancel was requested."""
    with Session(engine) as session, session.begin():
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=time.time()))
        return bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


# -- attempts, logs, metrics, checkpoints, events -------------------------------------
def add_rows(conn: Connection, model: Any, rows: list[dict[str, Any]]) -> None:
    bulk.executemany(conn, _insert(model.__table__), rows)


def add_attempts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    add_rows(conn, Attempt, rows)


def add_metrics(conn: Connection, rows: list[dict[str, Any]]) -> None:
    add_rows(conn, Metric, rows)


def add_checkpoints(conn: Connection, rows: list[dict[str, Any]]) -> None:
    add_rows(conn, Checkpoint, rows)


def add_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    add_rows(conn, Event, rows)


def attempts_of(session: Session, run_id: str, node: str | None = None) -> list[Attempt]:
    query = select(Attempt).where(Attempt.run_id == run_id)
    if node is not None:
        query = query.where(Attempt.node == node)
    return list(session.scalars(query.order_by(Attempt.id)))


def metrics_of(session: Session, run_id: str) -> list[Metric]:
    return list(session.scalars(select(Metric).where(Metric.run_id == run_id).order_by(Metric.id)))


# -- artifacts and the cache -------------------------------------------------------------
def add_artifacts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record artifacts; a row seen again is replaced, which repairs damaged inline bytes."""
    _insert_ignoring_duplicates(conn, Artifact, _last_per(rows, "digest"), "digest", replace=("data",))


def _last_per(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return list({row[key]: row for row in rows}.values())


def put_cache_entries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    # A recomputed entry repairs the outputs; which run first made it stays (for `flow why`).
    _insert_ignoring_duplicates(conn, CacheEntry, rows, "key", replace=("outputs", "serializers"))


def cache_entries(
    conn: Session | Connection,
    keys: Sequence[str],
    columns: Sequence[str] = ("outputs", "fingerprint", "inputs"),
) -> dict[str, Any]:
    """key -> a plain row with those columns of each cache entry that exists (a cache hit needs
    only the outputs; a resume's plan the fingerprint and inputs too)."""
    entries = CacheEntry.__table__.c
    selected = [entries.key, *(entries[name] for name in columns)]
    found: dict[str, Any] = {}
    for start in range(0, len(keys), 500):
        for row in conn.execute(select(*selected).where(entries.key.in_(keys[start : start + 500]))):
            found[row.key] = row
    return found


def add_fingerprints(conn: Connection, rows: list[dict[str, Any]]) -> None:
    _insert_ignoring_duplicates(conn, Fingerprint, _last_per(rows, "digest"), "digest")


def fingerprint_parts(session: Session, digests: Sequence[str | None]) -> dict[str, dict[str, Any]]:
    """digest -> the fingerprint's parts (see flowlib.hashing.Fingerprint.to_json)."""
    wanted = sorted({d for d in digests if d})
    if not wanted:
        return {}
    found = session.execute(
        select(Fingerprint.digest, Fingerprint.data).where(Fingerprint.digest.in_(wanted))
    )
    return dict(found.all())
