"""What the UI's forms change: cancel, resume, re-launch a run, launch a deployment.

Every one is a POST that needs the session cookie and its CSRF token (else 403). Cancel and
resume go through the API's own handlers, so who may do what (the run's owner or an admin)
is decided in one place; launches parse parameters with the same parser as `-p`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from scheduler.server import api, deployments, schemas
from scheduler.server.auth import User
from scheduler.server.compiling import CompileFailed
from scheduler.server.context import ServerContext
from scheduler.store import repository as repo
from scheduler.ui import forms
from scheduler.ui.pages import Pages, form_of
from scheduler.ui.session import Viewer, check_form

ACTIVE = ("queued", "pending", "running")
ENDED_BADLY = ("failed", "cancelled", "interrupted")


@dataclass
class Allowed:
    cancel: bool
    resume: bool
    why_not: str  # shown beside a button the viewer cannot use


def allowed(user: User, run: Any, shown: str, *, alive: bool) -> Allowed:
    """Which buttons the run page offers this viewer (the API checks again on the POST)."""
    owner = user.may_change(run.user)
    cancel = owner and shown in ACTIVE
    resumable = shown in ENDED_BADLY and not alive and bool(run.plan_digest and run.snapshot)
    why = ""
    if not owner:
        why = f"Only {run.user} or an admin may cancel or resume this run."
    elif shown in ENDED_BADLY and not run.snapshot:
        why = f"This run was not submitted to a server: resume it with `flow resume {run.id}` in its project."
    return Allowed(cancel, owner and resumable, why)


@dataclass
class Relaunch:
    action: str  # where the form posts
    fields: list[forms.Field]
    note: str = ""


def relaunch_fields(ctx: ServerContext, run: Any) -> Relaunch | None:
    """The form that launches a run again with edited parameters, or None when the server holds
    no code for it (a local `flow run`)."""
    values = run.params if isinstance(run.params, dict) else {}
    if run.deployment:
        try:
            row = deployments.latest(ctx.engine, run.deployment)
        except deployments.UnknownDeployment:
            row = None
        if row is not None:
            note = f"A run of deployment {row.name}, version {row.version} (its latest)."
            return Relaunch(
                f"/deployments/{row.name}/launch", forms.from_parameters(row.parameters, values), note
            )
    return same_code(run)


def same_code(run: Any) -> Relaunch | None:
    """The form that runs a run's own code snapshot again with new parameters."""
    if not (run.snapshot and run.plan_digest):
        return None
    values = run.params if isinstance(run.params, dict) else {}
    return Relaunch(f"/runs/{run.id}/relaunch", forms.from_values(values), "The same code, new parameters.")


def add(ui: APIRouter, ctx: ServerContext, pages: Pages, current_user: Any) -> None:
    # the API's own handlers, so the UI follows exactly its owner-or-admin rules
    handlers = {route.name: route.endpoint for route in api.router(ctx, current_user).routes}  # type: ignore[attr-defined]

    async def checked(request: Request) -> tuple[Viewer, dict[str, str]]:
        form = await form_of(request)
        return check_form(ctx, request, form), form

    @ui.post("/runs/{run_id}/cancel")
    @pages.guarded
    async def cancel(request: Request, run_id: str) -> Response:
        viewer, _ = await checked(request)
        done = await run_in_threadpool(handlers["cancel"], run_id=run_id, user=viewer.user)
        return RedirectResponse(f"/runs/{done['run_id']}", status_code=303)

    @ui.post("/runs/{run_id}/resume")
    @pages.guarded
    async def resume(request: Request, run_id: str) -> Response:
        viewer, _ = await checked(request)
        new = await run_in_threadpool(
            handlers["resume"], run_id=run_id, body=schemas.Resume(), user=viewer.user
        )
        return RedirectResponse(f"/runs/{new['run_id']}", status_code=303)

    @ui.post("/runs/{run_id}/relaunch")
    @pages.guarded
    async def relaunch(request: Request, run_id: str) -> Response:
        viewer, form = await checked(request)
        with ctx.engine.connect() as conn:
            run = repo.require_run(conn, run_id)
        target = same_code(run)
        if target is None:
            return pages.render(
                viewer, "error.html", 400, message=f"the server holds no code of run {run.id}"
            )
        params = forms.submitted(target.fields, form)
        try:
            new_id = await run_in_threadpool(_relaunch, ctx, run, params, viewer.user.name)
        except CompileFailed as exc:
            if not exc.bad_input:
                raise
            return _form_again(pages, viewer, f"Launch run {run.id} again", target, form, str(exc))
        ctx.queued()
        return RedirectResponse(f"/runs/{new_id}", status_code=303)

    @ui.post("/deployments/{name}/launch")
    @pages.guarded
    async def launch(request: Request, name: str) -> Response:
        viewer, form = await checked(request)
        row = deployments.latest(ctx.engine, name)
        target = Relaunch(
            f"/deployments/{row.name}/launch", forms.from_parameters(row.parameters, row.params)
        )
        params = forms.submitted(target.fields, form)
        try:
            new_id = await run_in_threadpool(ctx.launcher.launch, name, params, viewer.user.name)
        except CompileFailed as exc:
            if not exc.bad_input:
                raise
            return _form_again(
                pages, viewer, f"Launch {row.name}", target, form, str(exc), deployment=shown(row)
            )
        ctx.queued()
        return RedirectResponse(f"/runs/{new_id}", status_code=303)


def shown(row: Any) -> dict[str, Any]:
    return deployments.shown(row)


def _form_again(
    pages: Pages, viewer: Viewer, title: str, target: Relaunch, form: dict[str, str], error: str, **extra: Any
) -> Response:
    return pages.render(
        viewer,
        "launch.html",
        status=400,
        title=title,
        target=target,
        fields=forms.refill(target.fields, form),
        error=error,
        deployment=extra.get("deployment"),
    )


def _relaunch(ctx: ServerContext, run: Any, params: dict[str, str], user: str) -> str:
    """Compile the run's own code snapshot with new parameters (in a subprocess) and queue it."""
    from scheduler.server import queue
    from scheduler.server.compiling import compile_in_subprocess
    from scheduler.server.execution import code_root, load_plan

    old = load_plan(ctx.engine, run)
    root = code_root(ctx.store, run.snapshot, ctx.launcher.snapshots)
    plan = compile_in_subprocess(root, old.file, old.workflow, params)
    return queue.enqueue(
        ctx.engine, plan, snapshot=run.snapshot, user=user, executor=run.executor or ctx.executor
    )
