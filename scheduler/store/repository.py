"""The queries the scheduler and the CLI use; every write path batches its rows."""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Row, Table, bindparam, insert, select, update

from scheduler.store import bulk
from scheduler.store.bulk import chunks
from scheduler.store.models import (
    artifacts,
    attempts,
    cache_entries,
    checkpoints,
    edges,
    events,
    fingerprints,
    log_chunks,
    metrics,
    nodes,
    plans,
    runs,
)

_N = nodes.c
_R = runs.c


def _insert_ignoring_duplicates(
    conn: Connection, table: Table, rows: list[dict[str, Any]], key: str, *, replace: tuple[str, ...] = ()
) -> None:
    """Insert rows; a row whose key exists already updates only the `replace` columns."""
    if rows:
        bulk.upsert_many(conn, table, rows, key, replace)


@functools.cache
def _insert(table: Any) -> Any:
    return insert(table)


# -- runs ----------------------------------------------------------------------------------
def create_run(
    conn: Connection,
    values: dict[str, Any],
    node_rows: list[dict[str, Any]],
    edge_pairs: Iterable[tuple[str, str]],
) -> dict[str, int]:
    """Record a run with its nodes and edges; return node name -> row id."""
    conn.execute(insert(runs), [values])
    insert_nodes(conn, values["id"], node_rows, edge_pairs)
    return node_ids(conn, values["id"])


def node_ids(conn: Connection, run_id: str) -> dict[str, int]:
    return dict(conn.execute(select(_N.name, _N.id).where(_N.run_id == run_id)).all())  # type: ignore[arg-type]


def insert_nodes(
    conn: Connection, run_id: str, node_rows: list[dict[str, Any]], edge_pairs: Iterable[tuple[str, str]]
) -> None:
    bulk.insert_many(conn, _insert(nodes), [{"run_id": run_id, **row} for row in node_rows])
    edge_rows = [{"run_id": run_id, "src": src, "dst": dst} for src, dst in edge_pairs]
    bulk.insert_many(conn, _insert(edges), edge_rows)


def update_run(conn: Connection, run_id: str, **values: Any) -> None:
    conn.execute(update(runs).where(_R.id == run_id).values(**values))


def update_nodes(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Bulk UPDATE by primary key: each row holds `row_id` and the columns to set."""
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_shape.setdefault(tuple(sorted(row)), []).append(row)
    for shape, group in by_shape.items():
        bulk.executemany(conn, _node_update(shape), group)


def end_run(conn: Connection, run_id: str, status: str, error: str | None) -> None:
    """Record how a run ended, with its `run_<status>` event."""
    now = time.time()
    update_run(conn, run_id, status=status, ended_at=now, heartbeat_at=now, error=error)
    add_events(conn, [{"run_id": run_id, "node": None, "kind": "run_" + status, "data": None, "time": now}])


@functools.cache
def _node_update(columns: tuple[str, ...]) -> Any:
    values = {name: bindparam(name) for name in columns if name != "row_id"}
    return update(nodes).where(_N.id == bindparam("row_id")).values(values)


def cancel_dead_run(conn: Connection, run_id: str, why: str) -> None:
    """Mark a run whose scheduler died, and its unfinished nodes, cancelled."""
    now = time.time()
    conn.execute(
        update(nodes)
        .where(_N.run_id == run_id, _N.status.in_(("pending", "queued", "running")))
        .values(status="cancelled", error={"type": "Cancelled", "message": why}, ended_at=now)
    )
    update_run(conn, run_id, status="cancelled", error=why, ended_at=now, cancel_requested=True)


def get_run(conn: Connection, run_id: str) -> Row | None:
    return conn.execute(select(runs).where(_R.id == run_id)).first()


LATEST = "latest"


def find_run(conn: Connection, run_id: str) -> Row | None:
    """A run by id, by a unique prefix of its id, or the newest run for "latest"."""
    if run_id == LATEST:
        return conn.execute(select(runs).order_by(_R.created_at.desc(), _R.id.desc()).limit(1)).first()
    run = get_run(conn, run_id)
    if run is not None:
        return run
    matches = conn.execute(select(runs).where(_R.id.like(f"{run_id}%")).limit(2)).all()
    if len(matches) > 1:
        from flowlib.errors import FlowError

        raise FlowError(f"run id prefix '{run_id}' is ambiguous: give more of the id")
    return matches[0] if matches else None


def require_run(conn: Connection, run_id: str) -> Row:
    """The run `run_id` names (see find_run); RunNotFound, naming the database, when there is none."""
    run = find_run(conn, run_id)
    if run is None:
        from flowlib.errors import RunNotFound

        url = conn.engine.url.render_as_string(hide_password=True)
        raise RunNotFound(f"no run '{run_id}' in {url.removeprefix('sqlite:///')}")
    return run


def require_node(conn: Connection, run: Row, name: str) -> Row:
    """A node of a run by name; RunNotFound listing some of its nodes when there is none."""
    node = conn.execute(select(nodes).where(_N.run_id == run.id, _N.name == name)).first()
    if node is None:
        from flowlib.errors import RunNotFound

        names = conn.scalars(
            select(_N.name).where(_N.run_id == run.id).order_by(_N.position, _N.id).limit(20)
        ).all()
        raise RunNotFound(f"run {run.id} has no node '{name}'; its nodes: {', '.join(names)}")
    return node


def list_runs(
    conn: Connection,
    *,
    workflow: str | None = None,
    statuses: Sequence[str] | None = None,
    limit: int | None = None,
    user: str | None = None,
    deployment: str | None = None,
    sweep: str | None = None,
) -> Iterator[Row]:
    """Runs, newest first (streamed: a caller filtering further stops reading when it has enough)."""
    query = select(runs).order_by(_R.created_at.desc(), _R.id.desc())
    for column, value in (
        ("workflow", workflow),
        ("user", user),
        ("deployment", deployment),
        ("sweep", sweep),
    ):
        if value:
            query = query.where(_R[column] == value)
    if statuses:
        query = query.where(_R.status.in_(statuses))
    if limit:
        query = query.limit(limit)
    yield from conn.execute(query)


def node_summaries(conn: Connection, run_id: str) -> list[Row]:
    """What a RunResult shows of each node."""
    columns = (_N.name, _N.operator, _N.status, _N.cached, _N.attempts, _N.duration_s, _N.error, _N.reasons)
    query = select(*columns).where(_N.run_id == run_id).order_by(_N.position, _N.id)
    return list(conn.execute(query))


def node_outputs(conn: Connection, run_id: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """name -> the outputs recorded for those nodes of a run."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in chunks(names):
        query = select(_N.name, _N.outputs).where(_N.run_id == run_id, _N.name.in_(chunk))
        found.update({name: outputs or {} for name, outputs in conn.execute(query)})
    return found


def nodes_of(conn: Connection, run_id: str) -> list[Row]:
    return list(conn.execute(select(nodes).where(_N.run_id == run_id).order_by(_N.position, _N.id)))


def heartbeat_runs(engine: Engine, run_ids: Sequence[str]) -> list[str]:
    """Touch the runs' heartbeats; return those of them whose cancel was requested."""
    asked: list[str] = []
    with engine.begin() as conn:
        for chunk in chunks(run_ids):
            conn.execute(update(runs).where(_R.id.in_(chunk)).values(heartbeat_at=time.time()))
            asked += conn.scalars(select(_R.id).where(_R.id.in_(chunk), _R.cancel_requested)).all()
    return asked


# -- attempts, logs, metrics, checkpoints, events -------------------------------------
def add_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    bulk.executemany(conn, _insert(table), rows)


def add_attempts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    bulk.insert_many(conn, _insert(attempts), rows)  # many go by COPY on PostgreSQL


def add_metrics(conn: Connection, rows: list[dict[str, Any]]) -> None:
    add_rows(conn, metrics, rows)


def add_checkpoints(conn: Connection, rows: list[dict[str, Any]]) -> None:
    add_rows(conn, checkpoints, rows)


def add_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    add_rows(conn, events, rows)


def save_plan(conn: Connection, digest: str, text: str) -> None:
    """Store a plan once per digest."""
    _insert_ignoring_duplicates(
        conn, plans, [{"digest": digest, "data": text, "created_at": time.time()}], "digest"
    )


def load_plan_text(conn: Connection, digest: str) -> str | None:
    return conn.scalar(select(plans.c.data).where(plans.c.digest == digest))


def log_of(conn: Connection, run_id: str, node: str, attempt: int | None = None) -> list[Row]:
    """The streamed log chunks of a node (of one attempt), oldest first."""
    columns = log_chunks.c
    query = select(columns.attempt, columns.text, columns.id).where(
        columns.run_id == run_id, columns.node == node
    )
    if attempt is not None:
        query = query.where(columns.attempt == attempt)
    return list(conn.execute(query.order_by(columns.id)))


def attempts_of(conn: Connection, run_id: str, node: str | None = None) -> list[Row]:
    columns = attempts.c
    query = select(attempts).where(columns.run_id == run_id)
    if node is not None:
        query = query.where(columns.node == node)
    return list(conn.execute(query.order_by(columns.id)))


def metrics_of(conn: Connection, run_id: str) -> list[Row]:
    columns = metrics.c
    return list(conn.execute(select(metrics).where(columns.run_id == run_id).order_by(columns.id)))


# -- artifacts and the cache -------------------------------------------------------------
def add_artifacts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record artifacts; a row seen again is replaced, which repairs damaged inline bytes."""
    _insert_ignoring_duplicates(conn, artifacts, _last_per(rows, "digest"), "digest", replace=("data",))


def _last_per(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return list({row[key]: row for row in rows}.values())


def put_cache_entries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    # A recomputed entry repairs the outputs; which run first made it stays (for `flow why`).
    _insert_ignoring_duplicates(
        conn, cache_entries, _last_per(rows, "key"), "key", replace=("outputs", "serializers")
    )


def find_cache_entries(
    conn: Connection,
    keys: Sequence[str],
    columns: Sequence[str] = ("outputs", "fingerprint", "inputs"),
) -> dict[str, Any]:
    """key -> a plain row with those columns of each cache entry that exists (a cache hit needs
    only the outputs; a resume's plan the fingerprint and inputs too)."""
    entries = cache_entries.c
    selected = (entries.key, *(entries[name] for name in columns))
    make = _row_type(("key", *columns))
    return {row[0]: make(*row) for row in bulk.select_in(conn, selected, entries.key, keys)}


@functools.cache
def _row_type(names: tuple[str, ...]) -> Any:
    return collections.namedtuple("Row", names)  # type: ignore[misc]


def add_fingerprints(conn: Connection, rows: list[dict[str, Any]]) -> None:
    _insert_ignoring_duplicates(conn, fingerprints, _last_per(rows, "digest"), "digest")


def fingerprint_parts(conn: Connection, digests: Sequence[str | None]) -> dict[str, dict[str, Any]]:
    """digest -> the fingerprint's parts (see flowlib.hashing.Fingerprint.to_json)."""
    wanted = sorted({d for d in digests if d})
    if not wanted:
        return {}
    columns = fingerprints.c
    found = conn.execute(select(columns.digest, columns.data).where(columns.digest.in_(wanted)))
    return dict(found.all())  # type: ignore[arg-type]
