"""The API of deployments: register versions, list them, delete them, launch runs of them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from scheduler.server import deployments, schemas
from scheduler.server.api import _snapshot_exists, run_object
from scheduler.server.auth import User
from scheduler.server.context import ServerContext


def router(ctx: ServerContext, current_user: Any) -> APIRouter:
    api = APIRouter(prefix="/api", responses=schemas.ERRORS)
    Caller = Depends(current_user)

    @api.post(
        "/deployments",
        status_code=201,
        response_model=schemas.Deployed,
    )
    def deploy(body: schemas.Deploy, user: User = Caller) -> dict[str, Any]:
        """Register a workflow (its snapshot, typed parameters, an optional cron schedule) as a new version."""
        _snapshot_exists(ctx, body.snapshot)
        version = deployments.deploy(
            ctx.engine,
            name=body.name,
            workflow=body.workflow,
            file=body.file,
            snapshot=body.snapshot,
            parameters=[p.model_dump() for p in body.parameters],
            params=body.params,
            schedule=body.schedule,
            user=user.name,
        )
        ctx.queued()  # a schedule may be due
        return {"name": body.name, "version": version}

    @api.get("/deployments", response_model=list[schemas.DeploymentObject])
    def listing(_: User = Caller) -> list[dict[str, Any]]:
        """The latest version of every deployment; a parameter's `default` is what a launch without
        it uses (the value fixed with `flow deploy -p`, else the workflow's default)."""
        return [
            {**row, "params": [_with_fixed(p, row["fixed"]) for p in row["params"]]}
            for row in deployments.listing(ctx.engine)
        ]

    @api.delete("/deployments/{name}", response_model=schemas.Deployed)
    def delete(name: str, user: User = Caller) -> dict[str, Any]:
        """Delete a deployment (every version); its runs stay."""
        row = deployments.latest(ctx.engine, name)
        deployments.delete(ctx.engine, name)
        return {"name": name, "version": row.version}

    @api.post(
        "/deployments/{name}/launch",
        status_code=201,
        response_model=schemas.RunObject,
        response_model_exclude_unset=True,
    )
    def launch(name: str, body: schemas.Launch, user: User = Caller) -> dict[str, Any]:
        """Queue a run of the latest version, its parameters parsed by the workflow's annotations."""
        run_id = ctx.launcher.launch(name, body.params, user.name)
        ctx.queued()
        return run_object(ctx, run_id, nodes=False)

    return api


def _with_fixed(parameter: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    if parameter["name"] not in fixed:
        return parameter
    return {**parameter, "default": fixed[parameter["name"]], "required": False}
