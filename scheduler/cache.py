"""The cache index outside a run: list, clear, and garbage-collect the artifact store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from scheduler.models import Artifact, CacheEntry, Checkpoint, Node


def list_entries(engine: Engine, operator: str | None = None) -> list[dict[str, Any]]:
    query = select(CacheEntry).order_by(CacheEntry.created_at.desc())
    if operator:
        query = query.where(CacheEntry.operator == operator)
    with Session(engine) as session:
        return [
            {
                "key": e.key,
                "operator": e.operator,
                "node": e.node,
                "run_id": e.run_id,
                "created_at": e.created_at,
                "size": sum(int(ref.get("size", 0)) for ref in e.outputs.values()),
            }
            for e in session.scalars(query)
        ]


def clear_entries(engine: Engine, operator: str | None = None) -> int:
    with Session(engine) as session, session.begin():
        statement = delete(CacheEntry)
        if operator:
            statement = statement.where(CacheEntry.operator == operator)
        return session.execute(statement).rowcount or 0


def _referenced(outputs: Any, into: set[str]) -> None:
    for ref in (outputs or {}).values():
        into.add(ref["digest"])
        into.update(ref.get("elements") or [])


def referenced_digests(engine: Engine) -> set[str]:
    """Every digest a run's node, a cache entry or a checkpoint still points at."""
    keep: set[str] = set()
    with Session(engine) as session:
        for outputs in session.scalars(select(Node.outputs).where(Node.outputs.is_not(None))):
            _referenced(outputs, keep)
        for outputs in session.scalars(select(CacheEntry.outputs)):
            _referenced(outputs, keep)
        keep.update(session.scalars(select(Checkpoint.digest)))
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
    with Session(engine) as session:
        inline = session.execute(
            select(Artifact.digest, Artifact.size).where(Artifact.data.is_not(None))
        ).all()
    inline_doomed = [digest for digest, _ in inline if digest not in keep]
    freed += sum(size for digest, size in inline if digest not in keep)
    rows = doomed + inline_doomed
    if rows and not dry_run:
        with Session(engine) as session, session.begin():
            for start in range(0, len(rows), 500):
                session.execute(delete(Artifact).where(Artifact.digest.in_(rows[start : start + 500])))
    return len(rows), freed
