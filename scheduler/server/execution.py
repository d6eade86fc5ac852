"""From a claimed or adopted run in the database to a run a server's driver executes.

The run's plan and code snapshot come from the database and the artifact store; nothing
of the user's is imported here. A resumed run is planned against the run it resumes (as
`flow resume` does locally); an adopted run keeps what it recorded before its server died
and reruns what was left running, as interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update

from flowlib.plan import Plan
from flowlib.store import ArtifactStore
from scheduler.drivers.driver import RunHandle
from scheduler.drivers.local import make_handle
from scheduler.engine.resume import plan_resume, reuse_of
from scheduler.resuming import OLD_COLUMNS
from scheduler.server.snapshots import unpack
from scheduler.store import repository as repo
from scheduler.store.batch import Session
from scheduler.store.blobs import Blobs
from scheduler.store.lookups import StoreLookups
from scheduler.store.models import nodes

DONE = ("succeeded", "cached")
LEFT = ("running", "queued")


def load_plan(engine: Engine, run: Any) -> Plan:
    with engine.connect() as conn:
        text = repo.load_plan_text(conn, run.plan_digest)
    if text is None:
        raise LookupError(f"run {run.id} has no recorded plan")
    return Plan.loads(text)


def code_root(store: ArtifactStore, snapshot: str, folder: Path) -> Path:
    """The folder a snapshot is unpacked in (once per digest)."""
    target = folder / snapshot
    if target.is_dir():
        return target
    return unpack(store.read_verified(snapshot), folder)


def prepare(
    engine: Engine,
    run_id: str,
    *,
    adopted: bool,
    session: Session,
    store: ArtifactStore,
    blobs: Blobs,
    snapshots: Path,
    fsync: bool,
    default_executor: str,
    on_done: Any = None,
    owner: str | None = None,
) -> RunHandle:
    """A claimed (or adopted) run, ready for this server's driver (`owner`: this server's id)."""
    with engine.connect() as conn:
        run = repo.get_run(conn, run_id)
        rows = repo.nodes_of(conn, run_id)
    plan = load_plan(engine, run)
    if run.snapshot:
        plan = plan.with_root(str(code_root(store, run.snapshot, snapshots)))
    ids = {row.name: row.id for row in rows}
    reuse: dict[str, dict[str, Any]] = {}
    reasons: dict[str, list[str]] = {}
    prior: dict[str, int] = {}
    if adopted:
        for row in rows:
            prior[row.name] = row.attempts or 0
            if row.status in DONE and row.outputs:
                reuse[row.name] = {
                    "outputs": row.outputs,
                    "cache_key": row.cache_key,
                    "fingerprint": row.fingerprint,
                    "inputs": row.inputs,
                    "status": row.status,
                }
            elif row.status in LEFT:
                reasons[row.name] = [*(row.reasons or ()), "interrupted"]
    elif run.resumed_from:
        reuse, reasons = _resume_plan(engine, plan, run.resumed_from, store, run)
    if reasons:
        with engine.begin() as conn:
            repo.update_nodes(
                conn, [{"row_id": ids[name], "reasons": why} for name, why in reasons.items() if name in ids]
            )
    if adopted:
        with engine.begin() as conn:  # what was left running reads as rerun from here, not as running
            conn.execute(
                update(nodes)
                .where(nodes.c.run_id == run_id, nodes.c.status.in_(LEFT))
                .values(status="pending")
            )
    handle = make_handle(
        plan,
        run_id=run_id,
        root_run_id=run.root_run_id,
        ids=ids,
        session=session,
        store=store,
        blobs=blobs,
        fsync=fsync,
        default_executor=run.executor or default_executor,
        use_cache=(run.options or {}).get("use_cache", True),
        reuse=reuse,
        reasons=reasons,
        prior_attempts=prior,
        owner=owner,
    )
    handle.on_done = on_done
    return handle


def _resume_plan(
    engine: Engine, plan: Plan, old_id: str, store: ArtifactStore, run: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Plan a resume here (on the claiming thread: a session and blobs of its own, not the driver's)."""
    with engine.connect() as conn:
        old = {n.name: {c: getattr(n, c) for c in OLD_COLUMNS} for n in repo.nodes_of(conn, old_id)}
        parts = repo.fingerprint_parts(conn, [n["fingerprint"] for n in old.values()])
    session = Session(engine)
    try:
        steps = plan_resume(
            plan,
            old,
            parts,
            StoreLookups(session, store, Blobs(engine)),
            reuse_succeeded=bool((run.options or {}).get("reuse_succeeded")),
        )
    finally:
        session.stop()
    return reuse_of(steps), {step.name: step.reasons for step in steps}
