"""Read models for what nodes printed and logged: attempts' logs (streamed chunks, then the rest),
metrics, and where a cached node's came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, select

from scheduler.store import repository as repo
from scheduler.store.models import attempts, log_chunks, metrics, nodes, runs

ORIGIN_HOPS = 50  # the longest resume chain followed to find who computed a reused node


@dataclass
class AttemptLog:
    node: str
    number: int
    status: str  # the attempt's, or "running" while it goes on
    text: str
    origin: str | None = None  # "run R, node N" when the node came from another run


def origin_of(conn: Connection, run: Row, node: Row) -> tuple[str, str] | None:
    """(run id, node name) of the computation a cached node's result came from, else None."""
    if not node.cached:
        return None
    if node.cache_key:
        hit = repo.find_cache_entries(conn, [node.cache_key], ("run_id", "node")).get(node.cache_key)
        if hit is not None and (hit.run_id, hit.node) != (run.id, node.name):
            return hit.run_id, hit.node
    previous = run.resumed_from
    for _ in range(ORIGIN_HOPS):  # a node kept by resumes: follow the chain back to where it ran
        if previous is None:
            return None
        old = conn.execute(
            select(nodes.c.cached, nodes.c.status).where(
                nodes.c.run_id == previous, nodes.c.name == node.name
            )
        ).first()
        if old is not None and old.status == "succeeded":
            return previous, node.name
        previous = conn.scalar(select(runs.c.resumed_from).where(runs.c.id == previous))
    return None


def attempt_logs(conn: Connection, run_id: str, node: str | None = None) -> list[AttemptLog]:
    """Every attempt of a run's nodes (or one node) with its whole log, in order."""
    query = select(attempts).where(attempts.c.run_id == run_id)
    chunks = select(log_chunks).where(log_chunks.c.run_id == run_id)
    if node is not None:
        query = query.where(attempts.c.node == node)
        chunks = chunks.where(log_chunks.c.node == node)
    streamed: dict[tuple[str, int], list[str]] = {}
    for chunk in conn.execute(chunks.order_by(log_chunks.c.id)):
        streamed.setdefault((chunk.node, chunk.attempt), []).append(chunk.text)
    found = []
    for attempt in conn.execute(query.order_by(attempts.c.id)):
        text = "".join(streamed.pop((attempt.node, attempt.number), [])) + (attempt.log or "")
        found.append(AttemptLog(attempt.node, attempt.number, attempt.status, text))
    for (name, number), parts in streamed.items():  # attempts still running (or whose scheduler died)
        found.append(AttemptLog(name, number, "running", "".join(parts)))
    return found


def node_logs(conn: Connection, run: Row, node: str | None = None) -> list[AttemptLog]:
    """The logs of a run's nodes; a cached node shows those of the run that computed it."""
    found = attempt_logs(conn, run.id, node)
    ran = {log.node for log in found}
    query = select(nodes).where(nodes.c.run_id == run.id, nodes.c.cached)
    if node is not None:
        query = query.where(nodes.c.name == node)
    for row in conn.execute(query.order_by(nodes.c.position, nodes.c.id)):
        if row.name in ran:
            continue
        origin = origin_of(conn, run, row)
        if origin is None:
            continue
        for log in attempt_logs(conn, origin[0], origin[1]):
            log.origin = f"run {origin[0]}, node '{origin[1]}'"
            log.node = row.name
            found.append(log)
    return found


def node_metrics(conn: Connection, run: Row) -> list[dict[str, Any]]:
    """A run's metrics; a cached node's are those of the run that computed it, marked `from_run`."""
    rows = [
        _metric(m)
        for m in conn.execute(select(metrics).where(metrics.c.run_id == run.id).order_by(metrics.c.id))
    ]
    logged = {row["node"] for row in rows}
    for node in conn.execute(select(nodes).where(nodes.c.run_id == run.id, nodes.c.cached)):
        if node.name in logged:
            continue
        origin = origin_of(conn, run, node)
        if origin is None:
            continue
        query = select(metrics).where(metrics.c.run_id == origin[0], metrics.c.node == origin[1])
        for m in conn.execute(query.order_by(metrics.c.id)):
            rows.append({**_metric(m), "node": node.name, "from_run": origin[0]})
    return rows


def _metric(m: Row) -> dict[str, Any]:
    return {
        "node": m.node,
        "attempt": m.attempt,
        "name": m.name,
        "value": m.value,
        "step": m.step,
        "time": m.time,
    }
