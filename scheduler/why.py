"""`flow why`: which part of a node's cache key differs from the nearest earlier entry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from flowlib.errors import FlowError
from flowlib.hashing import diff_fingerprints
from scheduler import repository as repo
from scheduler.models import CacheEntry, Node, Run


def explain(engine: Engine, run_id: str, node_name: str) -> dict[str, Any]:
    """Return {"node", "status", "summary", "differences", "compared_with"} for one node."""
    with Session(engine) as session:
        run = repo.find_run(session, run_id)
        if run is None:
            raise FlowError(f"no run '{run_id}' in this database")
        node = session.scalar(select(Node).where(Node.run_id == run.id, Node.name == node_name))
        if node is None:
            names = ", ".join(n.name for n in repo.nodes_of(session, run.id)[:20])
            raise FlowError(f"run {run.id} has no node '{node_name}'; its nodes: {names}")
        if node.fingerprint is None:
            return _answer(
                node, f"node '{node_name}' never computed a cache key in run {run.id} ({node.status})", []
            )
        earlier = _nearest_earlier(session, run, node)
    if earlier is None:
        return _answer(
            node,
            f"node '{node_name}' ({node.status}): no earlier cache entry for operator "
            f"'{node.operator}' — this was its first computation",
            [],
        )
    source, fingerprint, inputs, key = earlier
    with Session(engine) as session:
        parts = repo.fingerprint_parts(session, [fingerprint, node.fingerprint])
    if key == node.cache_key:
        verb = "was reused from" if node.cached else "has the same key as"
        return _answer(
            node, f"node '{node_name}' ({node.status}) {verb} {source}: the keys are equal", [], source
        )
    differences = []
    if fingerprint != node.fingerprint:
        differences = diff_fingerprints(parts.get(fingerprint, {}), parts.get(node.fingerprint, {}))
    old_inputs, new_inputs = inputs or {}, node.inputs or {}
    for param in sorted(set(old_inputs) | set(new_inputs)):
        if old_inputs.get(param) != new_inputs.get(param):
            differences.append(f"input changed: {param}")
    summary = f"node '{node_name}' ({node.status}) missed the cache; compared with {source}:"
    return _answer(node, summary, differences or ["serializer changed"], source)


def _answer(node: Node, summary: str, differences: list[str], source: str | None = None) -> dict[str, Any]:
    return {
        "node": node.name,
        "status": node.status,
        "summary": summary,
        "differences": differences,
        "compared_with": source,
    }


def _nearest_earlier(session: Session, run: Run, node: Node) -> tuple[str, Any, Any, str] | None:
    """What to compare a node's key with: the entry it hit, else its nearest earlier computation.

    Earlier means the run this one resumed, else the newest run before this one that
    computed a node of that name and operator, else the newest earlier cache entry of the operator.
    """
    if node.cached and node.cache_key:
        hit = session.get(CacheEntry, node.cache_key)
        if hit is not None:
            return (
                f"the cache entry of run {hit.run_id} (node '{hit.node}')",
                hit.fingerprint,
                hit.inputs,
                hit.key,
            )
    if run.resumed_from:
        old = session.scalar(select(Node).where(Node.run_id == run.resumed_from, Node.name == node.name))
        if old is not None and old.fingerprint is not None:
            return f"run {run.resumed_from}", old.fingerprint, old.inputs, old.cache_key or ""
    before = (
        select(Node, Run.id)
        .join(Run, Run.id == Node.run_id)
        .where(
            Node.name == node.name,
            Node.operator == node.operator,
            Node.fingerprint.is_not(None),
            Run.created_at < run.created_at,
        )
        .order_by(Run.created_at.desc())
        .limit(1)
    )
    found = session.execute(before).first()
    if found is not None:
        old, old_run = found
        return f"run {old_run}", old.fingerprint, old.inputs, old.cache_key or ""
    entry = session.scalars(
        select(CacheEntry)
        .where(CacheEntry.operator == node.operator, CacheEntry.created_at < run.created_at)
        .order_by(CacheEntry.created_at.desc())
        .limit(1)
    ).first()
    if entry is None:
        return None
    return (
        f"the cache entry of run {entry.run_id} (node '{entry.node}')",
        entry.fingerprint,
        entry.inputs,
        entry.key,
    )
