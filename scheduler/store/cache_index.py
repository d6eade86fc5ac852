"""The cache index outside a run: list, clear, and garbage-collect the artifact store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, select

from scheduler.store.models import artifacts, cache_entries, checkpoints, nodes
from scheduler.store.repository import chunks

_A, _C = artifacts.c, cache_entries.c


def list_entries(engine: Engine, operator: str | None = None) -> list[dict[str, Any]]:
    query = select(cache_entries).order_by(_C.created_at.desc())
    if operator:
        query = query.where(_C.operator == operator)
    with engine.connect() as conn:
        return [
            {
                "key": e.key,
                "operator": e.operator,
                "node": e.node,
                "run_id": e.run_id,
                "created_at": e.created_at,
                "size": sum(int(ref.get("size", 0)) for ref in e.outputs.values()),
            }
            for e in conn.execute(query)
        ]


def clear_entries(engine: Engine, operator: str | None = None) -> int:
    with engine.begin() as conn:
        statement = delete(cache_entries)
        if operator:
            statement = statement.where(_C.operator == operator)
        return conn.execute(statement).rowcount or 0


def _referenced(outputs: Any, into: set[str]) -> None:
    for ref in (outputs or {}).values():
        into.add(ref["digest"])
        into.update(ref.get("elements") or [])


def referenced_digests(engine: Engine) -> set[str]:
    """Every digest a run's node, a cache entry or a checkpoint still points at."""
    keep: set[str] = set()
    with engine.connect() as conn:
        for outputs in conn.scalars(select(nodes.c.outputs).where(nodes.c.outputs.is_not(None))):
            _referenced(outputs, keep)
        for outputs in conn.scalars(select(_C.outputs)):
            _referenced(outputs, keep)
        keep.update(conn.scalars(select(checkpoints.c.digest)))
    return keep


def collect_garbage(engine: Engine, store: Any, *, dry_run: bool = False) -> tuple[int, int]:
    """Remove unreferenced artifacts, from the store and the database; return (count, bytes freed)."""
    keep = referenced_digests(engine)
    doomed = [digest for digest in store.iter_digests() if digest not in keep]
    freed = 0
    for digest in doomed:
        freed += store.size(digest)
        if not dry_run:
            store.delete(digest)
    with engine.connect() as conn:
        inline = conn.execute(select(_A.digest, _A.size).where(_A.data.is_not(None))).all()
    inline_doomed = [digest for digest, _ in inline if digest not in keep]
    freed += sum(size for digest, size in inline if digest not in keep)
    rows = doomed + inline_doomed
    if rows and not dry_run:
        with engine.begin() as conn:
            for chunk in chunks(rows):
                conn.execute(delete(artifacts).where(_A.digest.in_(chunk)))
    return len(rows), freed
