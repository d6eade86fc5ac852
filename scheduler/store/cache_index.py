"""The cache index and housekeeping: list and clear cache entries, delete and prune runs, and
garbage-collect the artifact store (the space given back on disk)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, delete, exists, select

from flowlib.artifacts import may_be_inline
from flowlib.store import MANIFEST, parse_manifest
from scheduler.store.models import (
    artifacts,
    cache_entries,
    checkpoints,
    deployments,
    events,
    log_chunks,
    nodes,
    plans,
    runs,
)
from scheduler.store.repository import chunks

_A, _C, _R = artifacts.c, cache_entries.c, runs.c
ACTIVE = ("queued", "pending", "running")


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


# -- runs ------------------------------------------------------------------------------------------------
def delete_runs(engine: Engine, run_ids: Sequence[str]) -> int:
    """Delete runs with everything recorded about them (not the cache entries they made)."""
    with engine.begin() as conn:
        for chunk in chunks(list(run_ids)):
            for table in (events, log_chunks):  # no foreign key to cascade along
                conn.execute(delete(table).where(table.c.run_id.in_(chunk)))
            conn.execute(delete(runs).where(_R.id.in_(chunk)))
        # checkpoints belong to a resume chain: gone with the last run of it
        conn.execute(delete(checkpoints).where(~exists().where(_R.root_run_id == checkpoints.c.root_run_id)))
        conn.execute(delete(plans).where(~exists().where(_R.plan_digest == plans.c.digest)))
    return len(run_ids)


def prunable(engine: Engine, older_than_s: float, *, keep_failed: bool) -> list[str]:
    """Runs that ended (not queued or running) before now - `older_than_s`."""
    query = select(_R.id).where(_R.created_at < time.time() - older_than_s, _R.status.not_in(ACTIVE))
    if keep_failed:
        query = query.where(_R.status != "failed")
    with engine.connect() as conn:
        return list(conn.scalars(query))


def parse_duration(text: str) -> float:
    """Seconds in "30d", "12h", "90m", "45s", "2w"; ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip().lower()
    if len(text) < 2 or text[-1] not in units:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m or 2w")
    try:
        number = float(text[:-1])
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m or 2w") from None
    if number < 0:
        raise ValueError(f"{text!r}: a duration is not negative")
    return number * units[text[-1]]


# -- garbage ---------------------------------------------------------------------------------------------
def referenced_digests(engine: Engine, store: Any) -> set[str]:
    """Every digest a run's node, a cache entry, a checkpoint or a code snapshot still points at
    (a list's manifest and its elements)."""
    keep: set[str] = set()
    manifests: list[dict[str, Any]] = []

    def add(outputs: Any) -> None:
        for ref in (outputs or {}).values():
            keep.add(ref["digest"])
            if ref.get("serializer") == MANIFEST:
                manifests.append(ref)

    with engine.connect() as conn:
        for outputs in conn.scalars(select(nodes.c.outputs).where(nodes.c.outputs.is_not(None))):
            add(outputs)
        for outputs in conn.scalars(select(_C.outputs)):
            add(outputs)
        keep.update(conn.scalars(select(checkpoints.c.digest)))
        keep.update(d for d in conn.scalars(select(_R.snapshot).where(_R.snapshot.is_not(None))))
        keep.update(conn.scalars(select(deployments.c.snapshot)))
        seen: set[str] = set()
        while manifests:
            ref = manifests.pop()
            if ref["digest"] in seen:
                continue
            seen.add(ref["digest"])
            data = (
                conn.scalar(select(_A.data).where(_A.digest == ref["digest"])) if may_be_inline(ref) else None
            )
            try:
                data = data if data is not None else store.read_verified(ref["digest"])
            except Exception:
                continue  # a missing manifest has no elements to keep
            for element in parse_manifest(ref["digest"], data):
                keep.add(element.digest)
                if element.serializer == MANIFEST:
                    manifests.append(element.to_json())
    return keep


def collect_garbage(engine: Engine, store: Any, *, dry_run: bool = False) -> tuple[int, int]:
    """Remove unreferenced artifacts, from the store and the database, and give the space back on
    disk; return (count, bytes freed)."""
    keep = referenced_digests(engine, store)
    doomed = [digest for digest in store.iter_digests() if digest not in keep]
    freed = 0
    for digest in doomed:
        freed += store.size(digest)
        if not dry_run:
            store.delete(digest)
    with engine.connect() as conn:
        stored = conn.execute(select(_A.digest, _A.size, _A.data.is_not(None))).all()
    unreferenced = [digest for digest, _, _ in stored if digest not in keep]
    freed += sum(size for digest, size, inline in stored if inline and digest not in keep)
    if not dry_run:
        with engine.begin() as conn:
            for chunk in chunks(unreferenced):
                conn.execute(delete(artifacts).where(_A.digest.in_(chunk)))
        give_back_space(engine)
    count = len(set(doomed) | {digest for digest, _, inline in stored if inline and digest not in keep})
    return count, freed


def give_back_space(engine: Engine) -> None:
    """SQLite: return free pages to the file system (an old database is converted once)."""
    if engine.url.get_backend_name() != "sqlite":
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() != 2:  # 2 = INCREMENTAL
            conn.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
            conn.exec_driver_sql("VACUUM")
        else:
            conn.exec_driver_sql("PRAGMA incremental_vacuum")
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
