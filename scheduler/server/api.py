"""The JSON API under /api/: runs, their nodes' logs, metrics and outputs, code snapshots."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from executors.stopping import GRACE_S
from flowlib.plan import Plan, PlanError
from flowlib.store import ArtifactRef
from scheduler.server import queue, schemas
from scheduler.server.auth import User
from scheduler.server.context import ServerContext
from scheduler.server.snapshots import KIND
from scheduler.store import repository as repo
from scheduler.store.models import events, runs

STATUSES = ("queued", "pending", "running", "succeeded", "failed", "cancelled", "interrupted")


def router(ctx: ServerContext, current_user: Any) -> APIRouter:
    api = APIRouter(prefix="/api", responses=schemas.ERRORS)
    Caller = Depends(current_user)

    # -- runs -----------------------------------------------------------------------------------------
    @api.post(
        "/runs",
        status_code=201,
        response_model=schemas.RunObject,
        response_model_exclude_unset=True,
    )
    def submit(body: schemas.Submit, user: User = Caller) -> dict[str, Any]:
        """Queue a run of a compiled plan, whose code is the snapshot uploaded before."""
        return queue_plan(
            ctx, body.plan, body.snapshot, user=user.name, executor=body.executor, priority=body.priority
        )

    @api.get("/runs", response_model=list[schemas.RunObject], response_model_exclude_unset=True)
    def list_runs(
        workflow: str | None = Query(None, max_length=200),
        status: str | None = Query(None, pattern="^(" + "|".join(STATUSES) + ")$"),
        user: str | None = Query(None, max_length=200),
        deployment: str | None = Query(None, max_length=200),
        sweep: str | None = Query(None, max_length=200),
        limit: int = Query(20, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=10_000_000),
        _: User = Caller,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, filtered; a run whose scheduler died reads `interrupted`."""
        return list_run_objects(
            ctx,
            workflow=workflow,
            status=status,
            user=user,
            deployment=deployment,
            sweep=sweep,
            limit=limit,
            offset=offset,
        )

    @api.get(
        "/runs/{run_id}",
        response_model=schemas.RunObject,
        response_model_exclude_unset=True,
    )
    def status(run_id: str, _: User = Caller) -> dict[str, Any]:
        """A run with its nodes (the `flow status --json` object)."""
        return run_object(ctx, run_id, nodes=True)

    @api.post(
        "/runs/{run_id}/cancel",
        response_model=schemas.Done,
    )
    def cancel(run_id: str, user: User = Caller) -> dict[str, Any]:
        """Cancel a queued or running run (its owner or an admin)."""
        from scheduler.store.readback import scheduler_alive

        with ctx.engine.begin() as conn:
            run = repo.require_run(conn, run_id)
            _may_change(user, run)
            if run.status == "queued" and queue.cancel_queued(conn, run.id, "cancelled before it started"):
                return {
                    "run_id": run.id,
                    "status": "cancelled",
                    "message": f"run {run.id} cancelled (it never started)",
                }
            run = repo.require_run(conn, run.id)
            if run.status not in ("running", "pending"):
                return {
                    "run_id": run.id,
                    "status": run.status,
                    "message": f"run {run.id} is already {run.status}",
                }
            if scheduler_alive(run):
                repo.update_run(conn, run.id, cancel_requested=True)
                if ctx.pool is not None:  # a sweep's pruned trial stops as in a local sweep: gently
                    ctx.pool.cancel(run.id, "cancelled by `flow cancel`", GRACE_S if run.sweep else 0.0)
                return {
                    "run_id": run.id,
                    "status": run.status,
                    "message": f"cancel requested for run {run.id}",
                }
            repo.cancel_dead_run(conn, run.id, "cancelled by `flow cancel` (its scheduler was gone)")
        return {
            "run_id": run.id,
            "status": "cancelled",
            "message": f"run {run.id} cancelled (its scheduler was gone)",
        }

    @api.post(
        "/runs/{run_id}/resume",
        status_code=201,
        response_model=schemas.RunObject,
        response_model_exclude_unset=True,
    )
    def resume(run_id: str, body: schemas.Resume, user: User = Caller) -> dict[str, Any]:
        """Queue a resume of a run: with the code given (a new plan and snapshot), else its own."""
        from scheduler.store.readback import scheduler_alive

        with ctx.engine.connect() as conn:
            run = repo.require_run(conn, run_id)
        _may_change(user, run)
        if scheduler_alive(run) or run.status == "queued":
            raise HTTPException(409, f"run {run.id} is still {run.status}: wait for it or cancel it first")
        if (body.plan is None) != (body.snapshot is None):
            raise HTTPException(
                400, "give both a plan and its snapshot, or neither (to resume with the run's own code)"
            )
        if body.plan is not None:
            plan, snapshot = _plan(body.plan), body.snapshot
            _snapshot_exists(ctx, snapshot)  # type: ignore[arg-type]
        else:
            if not run.plan_digest or not run.snapshot:
                raise HTTPException(
                    400, f"run {run.id} was not submitted to a server: resume it with its code"
                )
            from scheduler.server.execution import load_plan

            plan, snapshot = load_plan(ctx.engine, run), run.snapshot
        _mark_interrupted(ctx, run)
        new_id = queue.enqueue(
            ctx.engine,
            plan,
            snapshot=snapshot,  # type: ignore[arg-type]
            user=user.name,
            executor=run.executor or ctx.executor,
            resumed_from=run.id,
            root_run_id=run.root_run_id or run.id,
            reuse_succeeded=body.reuse_succeeded,
            sweep=run.sweep,  # a sweep's trial resumed is still that trial
            trial=run.trial,
        )
        ctx.queued()
        return run_object(ctx, new_id, nodes=False)

    @api.post("/runs/{run_id}/resume/plan", response_model=list[schemas.ResumeStep])
    def resume_plan(run_id: str, body: schemas.ResumePlan, _: User = Caller) -> list[dict[str, Any]]:
        """What a resume would do, node by node (`flow resume --dry-run`): records nothing."""
        from scheduler.resuming import resume_steps
        from scheduler.server.execution import load_plan

        with ctx.engine.connect() as conn:
            run = repo.require_run(conn, run_id)
        if body.plan is not None:
            plan = _plan(body.plan)
        elif run.plan_digest:
            plan = load_plan(ctx.engine, run)
        else:
            raise HTTPException(400, f"run {run.id} was not submitted to a server: give the plan of its code")
        steps = resume_steps(ctx.engine, ctx.store, run, plan, reuse_succeeded=body.reuse_succeeded)
        return [{**step.to_json(), "item_of": step.item_of} for step in steps]

    @api.get("/runs/{run_id}/nodes/{node}/logs", response_model=list[schemas.AttemptLog])
    def logs(run_id: str, node: str, _: User = Caller) -> list[dict[str, Any]]:
        """What a node printed, by attempt (a cached node: the run that computed it)."""
        from scheduler.store.logs import node_logs

        with ctx.engine.connect() as conn:
            run = repo.require_run(conn, run_id)
            repo.require_node(conn, run, node)
            return [vars(log) for log in node_logs(conn, run, node)]

    @api.get("/runs/{run_id}/logs", response_model=list[schemas.AttemptLog])
    def all_logs(run_id: str, _: User = Caller) -> list[dict[str, Any]]:
        """What every node of a run printed, by attempt."""
        from scheduler.store.logs import node_logs

        with ctx.engine.connect() as conn:
            return [vars(log) for log in node_logs(conn, repo.require_run(conn, run_id))]

    @api.get(
        "/runs/{run_id}/metrics",
        response_model=list[schemas.Metric],
        response_model_exclude_unset=True,  # `from_run` only where a cached node's came from another run
    )
    def metrics(
        run_id: str, name: str | None = Query(None, max_length=200), _: User = Caller
    ) -> list[dict[str, Any]]:
        """Metrics the run's nodes logged (a cached node's: from the run that computed it); with
        `name`, that metric's only."""
        from scheduler.store.logs import node_metrics

        with ctx.engine.connect() as conn:
            found = node_metrics(conn, repo.require_run(conn, run_id))
        return found if name is None else [m for m in found if m["name"] == name]

    @api.get("/runs/{run_id}/nodes/{node}/why", response_model=schemas.Why)
    def why(run_id: str, node: str, _: User = Caller) -> dict[str, Any]:
        """Why a node hit or missed the cache."""
        from scheduler.store.why import explain

        return explain(ctx.engine, run_id, node)

    @api.get("/runs/{run_id}/outputs")
    def outputs(
        run_id: str, node: str | None = Query(None, max_length=1000), path: bool = False, _: User = Caller
    ) -> Any:
        """The run's outputs (or a node's) as JSON; with `path`, where each artifact is."""
        from scheduler.store import outputs as view

        reader = ctx.reader()
        if path:
            return view.paths(ctx.engine, reader, run_id, node)
        if node is not None:
            return view.node_values(ctx.engine, reader, run_id, node, imports=False)
        return view.run_values(ctx.engine, reader, run_id, imports=False)

    @api.get(
        "/runs/{run_id}/events",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "object"}}}, "description": "Events"}
        },
    )
    async def live(
        run_id: str, request: Request, after: int = Query(0, ge=0), _: User = Caller
    ) -> StreamingResponse:
        """Server-sent events: each state change of the run as it is recorded, then `end`."""
        with ctx.engine.connect() as conn:
            run = repo.require_run(conn, run_id)

        async def stream() -> Any:
            last, quiet = after, 0
            while not await request.is_disconnected():
                rows, state = await asyncio.to_thread(_events_after, ctx, run.id, last)
                for row in rows:
                    last = row.id
                    payload = {"kind": row.kind, "node": row.node, "data": row.data, "time": row.time}
                    yield f"id: {row.id}\nevent: change\ndata: {json.dumps(payload, default=repr)}\n\n"
                if state not in ("queued", "pending", "running"):
                    yield f"event: end\ndata: {json.dumps({'status': state})}\n\n"
                    return
                quiet = 0 if rows else quiet + 1
                if quiet and quiet % 30 == 0:
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.5)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    # -- snapshots ----------------------------------------------------------------------------------------
    @api.put(
        "/snapshots/{digest}",
        status_code=201,
        response_model=schemas.Snapshot,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload(digest: str, request: Request, _: User = Caller) -> dict[str, Any]:
        """Upload a code snapshot (a tar of the project) under its sha256."""
        _check_digest(digest)
        limit = int(ctx.max_code_mb * 1_000_000) + 1_000_000  # the tar's headers beside the files
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise HTTPException(
                    413, f"a code snapshot is limited to {ctx.max_code_mb:g} MB ([server] max_code_mb)"
                )
        if hashlib.sha256(data).hexdigest() != digest:
            raise HTTPException(400, "the bytes do not hash to the digest in the URL")
        ref = ArtifactRef(digest, KIND, 1, len(data))
        await asyncio.to_thread(ctx.store.write, ref, bytes(data))
        return {"digest": digest, "size": len(data)}

    @api.get("/snapshots/{digest}", response_model=schemas.Snapshot)
    def snapshot(digest: str, _: User = Caller) -> dict[str, Any]:
        """Whether the server holds a snapshot (clients upload only what it lacks)."""
        _check_digest(digest)
        _snapshot_exists(ctx, digest)
        return {"digest": digest, "size": ctx.store.size(digest)}

    return api


# -- helpers ----------------------------------------------------------------------------------------------
def queue_plan(
    ctx: ServerContext,
    plan: dict[str, Any],
    snapshot: str,
    *,
    user: str,
    executor: str | None,
    **columns: Any,
) -> dict[str, Any]:
    """Queue a run of a compiled plan (JSON) whose code is the snapshot uploaded before; the run object."""
    compiled = _plan(plan)
    _snapshot_exists(ctx, snapshot)
    run_id = queue.enqueue(
        ctx.engine,
        compiled,
        snapshot=snapshot,
        user=user,
        executor=executor or ctx.executor,
        **columns,
    )
    ctx.queued()
    return run_object(ctx, run_id, nodes=False)


def _plan(data: dict[str, Any]) -> Plan:
    try:
        return Plan.from_json(data)
    except PlanError as exc:
        raise HTTPException(400, f"not a plan: {exc}") from None


def _check_digest(digest: str) -> None:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise HTTPException(400, "a digest is 64 lowercase hex characters")


def _snapshot_exists(ctx: ServerContext, digest: str) -> None:
    if not ctx.store.exists(digest):
        raise HTTPException(
            404, f"no code snapshot {digest[:12]} on this server: upload it first (PUT /api/snapshots/DIGEST)"
        )


def _may_change(user: User, run: Any) -> None:
    if not user.may_change(run.user):
        raise HTTPException(403, f"run {run.id} belongs to {run.user}: only they or an admin may change it")


def _mark_interrupted(ctx: ServerContext, run: Any) -> None:
    from scheduler.resuming import mark_interrupted

    mark_interrupted(ctx.engine, run)


def _events_after(ctx: ServerContext, run_id: str, last: int) -> tuple[list[Any], str]:
    from scheduler.store.readback import shown_status

    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(events)
            .where(events.c.run_id == run_id, events.c.id > last)
            .order_by(events.c.id)
            .limit(500)
        ).all()
        run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    return rows, shown_status(run) if run is not None else "unknown"


def run_object(ctx: ServerContext, run_id: str, *, nodes: bool) -> dict[str, Any]:
    """A run as `flow status --json` (or, without nodes, `flow runs --json`) shows it."""
    from scheduler.store.listing import run_objects, run_with_nodes

    if nodes:
        return run_with_nodes(ctx.engine, ctx.reader(), run_id, imports=False)
    with ctx.engine.connect() as conn:
        row = repo.require_run(conn, run_id)
    return run_objects(ctx.engine, ctx.reader(), [row], imports=False)[0]


def list_run_objects(ctx: ServerContext, **filters: Any) -> list[dict[str, Any]]:
    from scheduler.store.listing import find_runs, run_objects

    return run_objects(ctx.engine, ctx.reader(), find_runs(ctx.engine, **filters), imports=False)
