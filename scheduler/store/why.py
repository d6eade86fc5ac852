"""`flow why`: which part of a node's cache key differs from the nearest earlier entry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Row, select

from flowlib.hashing import diff_fingerprints
from scheduler.store import repository as repo
from scheduler.store.models import cache_entries, nodes, runs

_C, _N, _R = cache_entries.c, nodes.c, runs.c


def explain(engine: Engine, run_id: str, node_name: str) -> dict[str, Any]:
    """Return {"node", "status", "summary", "differences", "compared_with"} for one node."""
    with engine.connect() as conn:
        run = repo.require_run(conn, run_id)
        node = repo.require_node(conn, run, node_name)
        kept = [r for r in node.reasons or () if r.endswith("(--reuse-succeeded)")]
        items = conn.scalars(
            select(_N.name).where(_N.run_id == run.id, _N.map_parent == node_name).limit(1)
        ).all()
        if items or node.fingerprint is None:
            if items:
                how = " (every item came from the cache)" if node.cached else ""
                return _answer(
                    node,
                    f"node '{node_name}' ({node.status}) gathers the items of a map{how}; ask about an "
                    f"item, e.g. `flow why {run.id} '{items[0]}'`",
                    [],
                )
            return _answer(
                node, f"node '{node_name}' never computed a cache key in run {run.id} ({node.status})", []
            )
        if kept:
            return _answer(
                node,
                f"node '{node_name}' ({node.status}) was kept from run {run.resumed_from} by `flow resume "
                "--reuse-succeeded` though its code changed:",
                [
                    r.removesuffix(" (--reuse-succeeded)")
                    for r in node.reasons or ()
                    if r.startswith("code changed")
                ]
                or kept,
                f"run {run.resumed_from}",
            )
        earlier = _nearest_earlier(conn, run, node)
        files = _file_params(conn, run, node_name)
    if earlier is None:
        return _answer(
            node,
            f"node '{node_name}' ({node.status}): no earlier cache entry for operator "
            f"'{node.operator}' — this was its first computation",
            [],
        )
    source, fingerprint, inputs, key = earlier
    with engine.connect() as conn:
        parts = repo.fingerprint_parts(conn, [fingerprint, node.fingerprint])
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
            differences.append(f"input changed: {param}{' (file content)' if param in files else ''}")
    summary = f"node '{node_name}' ({node.status}) missed the cache; compared with {source}:"
    return _answer(node, summary, differences or ["serializer changed"], source)


def _file_params(conn: Connection, run: Row, name: str) -> set[str]:
    """The parameters of a node that are flowlib.File inputs (from the run's plan)."""
    if not getattr(run, "plan_digest", None):
        return set()
    text = repo.load_plan_text(conn, run.plan_digest)
    if text is None:
        return set()
    from flowlib.plan import LiteralInput, Plan

    plan = Plan.loads(text)
    base = name.split("[", 1)[0] if name.endswith("]") else name
    for node in plan.nodes:
        if node.name in (name, base):
            inputs = dict(node.inputs)
            if node.name == base != name and node.items is not None and node.map_param:
                index = int(name[len(base) + 1 : -1])
                inputs[node.map_param] = node.items[index]
            return {p for p, v in inputs.items() if isinstance(v, LiteralInput) and v.file is not None}
    return set()


def _answer(node: Row, summary: str, differences: list[str], source: str | None = None) -> dict[str, Any]:
    return {
        "node": node.name,
        "status": node.status,
        "summary": summary,
        "differences": differences,
        "compared_with": source,
    }


def _nearest_earlier(conn: Connection, run: Row, node: Row) -> tuple[str, Any, Any, str] | None:
    """What to compare a node's key with: the entry it hit, else its nearest earlier computation.

    Earlier means the run this one resumed, else the newest run before this one that
    computed a node of that name and operator, else the newest earlier cache entry of the operator.
    """
    if node.cached and node.cache_key:
        columns = ("run_id", "node", "fingerprint", "inputs")
        hit = repo.find_cache_entries(conn, [node.cache_key], columns).get(node.cache_key)
        if hit is not None:
            return (
                f"the cache entry of run {hit.run_id} (node '{hit.node}')",
                hit.fingerprint,
                hit.inputs,
                hit.key,
            )
    if run.resumed_from:
        old = conn.execute(select(nodes).where(_N.run_id == run.resumed_from, _N.name == node.name)).first()
        if old is not None and old.fingerprint is not None:
            return f"run {run.resumed_from}", old.fingerprint, old.inputs, old.cache_key or ""
    before = (
        select(_N.fingerprint, _N.inputs, _N.cache_key, _R.id)
        .join(runs, _R.id == _N.run_id)
        .where(
            _N.name == node.name,
            _N.operator == node.operator,
            _N.fingerprint.is_not(None),
            _R.created_at < run.created_at,
        )
        .order_by(_R.created_at.desc())
        .limit(1)
    )
    found = conn.execute(before).first()
    if found is not None:
        fingerprint, inputs, cache_key, old_run = found
        return f"run {old_run}", fingerprint, inputs, cache_key or ""
    entry = conn.execute(
        select(cache_entries)
        .where(_C.operator == node.operator, _C.created_at < run.created_at)
        .order_by(_C.created_at.desc())
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
