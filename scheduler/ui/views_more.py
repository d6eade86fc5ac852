"""The UI's pages beyond the runs and a run: a node (and its log, followed live), compare,
deployments with their launch forms, sweeps."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from scheduler.server import deployments
from scheduler.server.context import ServerContext
from scheduler.store import repository as repo
from scheduler.store.readback import shown_status
from scheduler.ui import charts, forms, metric_view, node_view, parallel, sweeps
from scheduler.ui.actions import Relaunch
from scheduler.ui.pages import HEADERS, Pages, shown_value
from scheduler.ui.session import identify

COMPARED = 8  # runs a comparison shows at most


def add(ui: APIRouter, ctx: ServerContext, pages: Pages, current_user: Any) -> None:
    @ui.get("/runs/{run_id}/nodes/{node:path}/log")
    @pages.guarded
    def node_log(request: Request, run_id: str, node: str, after: int = 0) -> Response:
        """Log text streamed since chunk `after`, and whether the node still runs (for following)."""
        identify(ctx, request)
        with ctx.engine.connect() as conn:
            run = repo.require_run(conn, run_id)
            row = repo.require_node(conn, run, node)
            found = node_view.chunks_after(conn, run.id, node, after)
        state = row.status if shown_status(run) != "interrupted" else "interrupted"
        return JSONResponse(
            {
                "status": state,
                "active": state in ("queued", "pending", "running"),
                "after": found[-1].id if found else after,
                "chunks": [{"attempt": c.attempt, "text": c.text} for c in found],
            },
            headers=HEADERS,
        )

    @ui.get("/runs/{run_id}/nodes/{node:path}")
    @pages.guarded
    def node_page(request: Request, run_id: str, node: str) -> Response:
        viewer = identify(ctx, request)
        from scheduler.store.logs import node_logs

        reader = ctx.reader()
        with ctx.engine.connect() as conn:
            run = repo.require_run(conn, run_id)
            row = repo.require_node(conn, run, node)
            cursor = node_view.log_cursor(conn, run.id, node)
            logs = node_logs(conn, run, node)
            attempts = repo.attempts_of(conn, run.id, node)
            inputs = node_view.inputs(conn, reader, row, node_view.plan_literals(conn, run, node))
            checkpoints = node_view.node_checkpoints(conn, run, node)
            items = node_view.items(conn, run.id, node)
            metric_rows = metric_view.rows_of(conn, run, node)
        shown = shown_status(run)
        state = (
            "interrupted"
            if shown == "interrupted" and row.status in ("queued", "pending", "running")
            else row.status
        )
        try:
            from scheduler.store.why import explain

            why = explain(ctx.engine, run.id, node)
        except Exception as exc:
            why = {"summary": f"cannot explain: {exc}", "differences": []}
        return pages.render(
            viewer,
            "node.html",
            run=run,
            node=row,
            state=state,
            active=state in ("queued", "pending", "running"),
            cursor=cursor,
            logs=logs,
            attempts=attempts,
            inputs=inputs,
            outputs=node_view.outputs(reader, row),
            checkpoints=checkpoints,
            items=items,
            why=why,
            charts=metric_view.node_charts(metric_rows),
            line_chart=charts.line_chart,
        )

    @ui.get("/compare")
    @pages.guarded
    def compare(request: Request) -> Response:
        viewer = identify(ctx, request)
        wanted: list[str] = []
        for value in request.query_params.getlist("runs"):
            wanted += [part.strip() for part in value.split(",") if part.strip()]
        wanted = list(dict.fromkeys(wanted))[:COMPARED]
        found, per_run = [], {}
        with ctx.engine.connect() as conn:
            for run_id in wanted:
                run = repo.require_run(conn, run_id)
                found.append({"run": run, "status": shown_status(run)})
                per_run[run.id] = metric_view.rows_of(conn, run)
        params = _side_by_side([item["run"].params or {} for item in found])
        finals = _side_by_side([metric_view.final_values(per_run[item["run"].id]) for item in found])
        return pages.render(
            viewer,
            "compare.html",
            runs=found,
            params=params,
            finals=finals,
            charts=metric_view.overlaid(per_run) if len(found) > 1 else {},
            line_chart=charts.line_chart,
            wanted=",".join(wanted),
        )

    @ui.get("/deployments")
    @pages.guarded
    def deployments_page(request: Request) -> Response:
        viewer = identify(ctx, request)
        return pages.render(viewer, "deployments.html", deployments=deployments.listing(ctx.engine))

    @ui.get("/deployments/{name}/launch")
    @pages.guarded
    def launch_form(request: Request, name: str) -> Response:
        viewer = identify(ctx, request)
        row = deployments.latest(ctx.engine, name)
        target = Relaunch(
            f"/deployments/{row.name}/launch", forms.from_parameters(row.parameters, row.params)
        )
        return pages.render(
            viewer,
            "launch.html",
            title=f"Launch {row.name}",
            target=target,
            fields=target.fields,
            error=None,
            deployment=deployments.shown(row),
        )

    @ui.get("/sweeps/{name}")
    @pages.guarded
    def sweep_page(request: Request, name: str) -> Response:
        viewer = identify(ctx, request)
        sweep = sweeps.sweep_data(ctx.engine, ctx.reader(), name)
        if sweep is None:
            return pages.render(viewer, "error.html", 404, message=f"no sweep named '{name}'")
        return pages.render(
            viewer, "sweep.html", sweep=sweep, objective_chart=_objective(sweep), parallel=_parallel(sweep)
        )


def _side_by_side(dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of {"name", "values" (as shown), "differs"} over the union of the dicts' keys."""
    names = list(dict.fromkeys(k for d in dicts for k in d))
    rows = []
    for name in names:
        exact = {json.dumps(d[name], sort_keys=True, default=repr) if name in d else "" for d in dicts}
        values = [shown_value(d[name], 120) if name in d else "-" for d in dicts]
        rows.append({"name": name, "cells": values, "differs": len(exact) > 1})
    return rows


def _objective(sweep: sweeps.Sweep) -> Any:
    done = [t for t in sweep.trials if t.value is not None]
    if not done:
        return None
    points = [(float(t.number), float(t.value)) for t in done]  # type: ignore[arg-type]
    best, running = [], None
    for x, y in points:
        if running is None or (y > running if sweep.direction == "maximize" else y < running):
            running = y
        best.append((x, running))
    return charts.line_chart(
        f"{sweep.objective or 'objective'} over trials ({sweep.direction})",
        [charts.Series("trial", points, dots=True), charts.Series("best so far", best)],
        x_label="trial",
    )


def _parallel(sweep: sweeps.Sweep) -> Any:
    rows = [([t.params.get(name) for name in sweep.tuned], t.value) for t in sweep.trials]
    return parallel.parallel(sweep.tuned, rows, sweep.objective, sweep.direction == "maximize")
