"""The web UI's pages: runs, a run, a node, compare, deployments and their launch forms, sweeps.

Served beside the JSON API by `flow server` and `flow ui`. Pages are rendered on the server;
small scripts under /static keep them live (the run page listens to the API's server-sent
events and re-fetches its drawing; the runs page and a node's log poll small fragments).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from scheduler.server.context import ServerContext
from scheduler.store import repository as repo
from scheduler.store.models import runs
from scheduler.store.readback import scheduler_alive, shown_status
from scheduler.ui import actions, charts, dag_svg, metric_view, run_view, runs_query, static, views_more
from scheduler.ui.pages import HEADERS, Pages
from scheduler.ui.session import identify


class _ItemsInMaps(dict):
    """Node name -> the box it is drawn in; a map's item (`train[3]`) goes to its map's box."""

    def get(self, name: str, default: Any = None) -> Any:
        found = super().get(name)
        if found is None and name.endswith("]"):
            found = super().get(name.rsplit("[", 1)[0])
        return found if found is not None else default


STATUSES = ("queued", "pending", "running", "succeeded", "failed", "cancelled", "interrupted")


def router(ctx: ServerContext, current_user: Any) -> APIRouter:
    """The UI's routes; `current_user` is the API's (the UI reads tokens the same way, in session)."""
    ui = APIRouter(include_in_schema=False)
    pages = Pages()
    shapes = run_view.Shapes()
    static.add(ui)

    @ui.get("/")
    @pages.guarded
    def home(request: Request) -> Response:
        identify(ctx, request)
        return RedirectResponse("/runs", status_code=303)

    # -- runs ---------------------------------------------------------------------------------------
    def runs_query_of(request: Request) -> runs_query.Query:
        p = request.query_params
        try:
            page = max(1, int(p.get("page", "1")))
        except ValueError:
            page = 1
        status = p.get("status", "")
        return runs_query.Query(
            workflow=p.get("workflow", "")[:200],
            status=status if status in STATUSES else "",
            user=p.get("user", "")[:200],
            param=p.get("param", "")[:500],
            sort=p.get("sort", "created") if p.get("sort") in runs_query.SORTS else "created",
            desc=p.get("desc", "1") != "0",
            page=page,
        )

    def runs_data(q: runs_query.Query) -> dict[str, Any]:
        base = {k: v for k, v in vars(q).items() if k not in ("page", "desc") and v}
        base["desc"] = "1" if q.desc else "0"

        def sort_url(key: str) -> str:
            desc = "0" if q.sort == key and q.desc else "1"
            return "/runs?" + urlencode({**base, "sort": key, "desc": desc})

        def page_url(number: int) -> str:
            return "/runs?" + urlencode({**base, "page": number})

        with ctx.engine.connect() as conn:
            listed = runs_query.find(conn, q)
        return {
            "q": q,
            "listed": listed,
            "sort_url": sort_url,
            "page_url": page_url,
            "live_url": "/runs/table?" + urlencode({**base, "page": q.page}),
        }

    @ui.get("/runs")
    @pages.guarded
    def runs_page(request: Request) -> Response:
        viewer = identify(ctx, request)
        q = runs_query_of(request)
        with ctx.engine.connect() as conn:
            workflows = conn.scalars(
                select(runs.c.workflow).distinct().order_by(runs.c.workflow).limit(200)
            ).all()
        return pages.render(viewer, "runs.html", workflows=workflows, statuses=STATUSES, **runs_data(q))

    @ui.get("/runs/table")
    @pages.guarded
    def runs_table(request: Request) -> Response:
        identify(ctx, request)
        html = pages.fragment("_runs_table.html", **runs_data(runs_query_of(request)))
        return Response(html, media_type="text/html", headers=HEADERS)

    # -- a run ---------------------------------------------------------------------------------------
    def run_drawing(run_id: str) -> dict[str, Any]:
        """What the live parts of a run page show: the DAG, the timeline, the counts."""
        with ctx.engine.connect() as conn:
            run = repo.require_run(conn, run_id)
            shown = shown_status(run)
            drawing = shapes.of(conn, run)
            states = run_view.box_states(conn, run, drawing.shape, shown)
        now = time.time()
        rows = [
            (
                run_view.label(box, state),
                state.status,
                state.started,
                state.ended,
                f"/runs/{run.id}/nodes/{quote(box.name)}",
            )
            for box, state in zip(drawing.shape.boxes, states, strict=True)
        ]
        rows.sort(key=lambda row: (row[2] is None, row[2] or 0))
        total: dict[str, int] = {}
        for state in states:
            for key, n in state.counts.items():
                total[key] = total.get(key, 0) + n
        return {
            "run": run,
            "status": shown,
            "dag": dag_svg.draw(run.id, drawing, states),
            "timeline": charts.timeline(rows[:80], run.started_at or run.created_at, now),
            "hidden_rows": max(0, len(rows) - 80),
            "totals": total,
            "box_of": drawing.shape.index,
            "boxes": drawing.shape.boxes,
        }

    @ui.get("/runs/{run_id}")
    @pages.guarded
    def run_page(request: Request, run_id: str) -> Response:
        viewer = identify(ctx, request)
        live = run_drawing(run_id)
        run = live["run"]
        box_names = {name: live["boxes"][i].name for name, i in live["box_of"].items()}
        with ctx.engine.connect() as conn:
            failed = run_view.failed_nodes(conn, run.id)
            run_charts = metric_view.run_chart_data(conn, run, _ItemsInMaps(box_names))
        outputs, outputs_note = run_view.outputs_shown(ctx.engine, ctx.reader(), run)
        return pages.render(
            viewer,
            "run.html",
            live=live,
            run=run,
            failed=failed,
            outputs=outputs,
            outputs_note=outputs_note,
            charts=run_charts,
            line_chart=charts.line_chart,
            may=actions.allowed(viewer.user, run, live["status"], alive=scheduler_alive(run)),
            relaunch=actions.relaunch_fields(ctx, run),
            run_duration=run_view.elapsed(
                run.started_at,
                run.ended_at if live["status"] not in ("queued", "pending", "running") else None,
            ),
        )

    @ui.get("/runs/{run_id}/live")
    @pages.guarded
    def run_live(request: Request, run_id: str) -> Response:
        """The live parts of a run page, re-fetched when its events say something changed."""
        identify(ctx, request)
        live = run_drawing(run_id)
        return JSONResponse(
            {
                "status": live["status"],
                "active": live["status"] in ("queued", "pending", "running"),
                "dag": str(live["dag"]),
                "timeline": str(live["timeline"]),
                "summary": pages.fragment("_run_summary.html", live=live),
            },
            headers=HEADERS,
        )

    views_more.add(ui, ctx, pages, current_user)
    actions.add(ui, ctx, pages, current_user)
    return ui
