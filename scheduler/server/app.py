"""The server's ASGI app: the JSON API under /api/ (described at /openapi.json) and the web UI."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from flowlib import __version__
from flowlib.errors import FlowError, RunNotFound
from scheduler.server import api, api_deploy, api_sweeps, schemas
from scheduler.server.auth import User
from scheduler.server.context import SESSION_COOKIE, ServerContext


class SafeJSON(JSONResponse):
    """JSON that never fails on a value: a NaN or infinite metric goes as null, anything else as its repr."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=False, separators=(",", ":"), default=repr).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def create_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(
        title="flowlib",
        version=__version__,
        description="The flowlib scheduler service: submit runs, read them, deploy workflows.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSON,
    )

    def current_user(request: Request) -> User:
        header = request.headers.get("authorization", "")
        token = (
            header[7:].strip()
            if header.lower().startswith("bearer ")
            else request.cookies.get(SESSION_COOKIE)
        )
        user = ctx.user(token)
        if user is None:
            raise HTTPException(401, "a valid token is needed (Authorization: Bearer TOKEN)")
        if token and not header and request.method not in ("GET", "HEAD", "OPTIONS"):
            # a browser sends the session cookie by itself: changes go through the UI's CSRF-checked forms
            raise HTTPException(403, "a change through the API needs Authorization: Bearer TOKEN")
        return user

    @app.get("/api/health", response_model=schemas.Health)
    def health() -> dict[str, Any]:
        """Whether the server is up (no token needed)."""
        return {"status": "ok", "server": ctx.pool.server_id if ctx.pool is not None else None}

    app.include_router(api.router(ctx, current_user))
    app.include_router(api_deploy.router(ctx, current_user))
    app.include_router(api_sweeps.router(ctx, current_user))
    try:
        from scheduler.ui.views import router as ui_router
    except ImportError:  # the web UI ships with the server; a trimmed install serves the API alone
        ui_router = None
    if ui_router is not None:
        app.include_router(ui_router(ctx, current_user))
    _errors(app)
    return app


def _errors(app: FastAPI) -> None:
    """Every error is a JSON {"error": ...} with a 4xx status (a 500 only for a bug)."""

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own, and Starlette's (an unparsable body)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return SafeJSON({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return SafeJSON({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(FlowError)
    async def flow_error(_: Request, exc: FlowError) -> JSONResponse:
        from scheduler.server.deployments import UnknownDeployment

        status = 404 if isinstance(exc, (RunNotFound, UnknownDeployment)) else 400
        return SafeJSON({"error": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:
        return SafeJSON({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
