"""Rendering pages: Jinja2 templates with autoescaping on (every user-written string is escaped
unless a drawing module escaped it already), the headers every page carries, and the answers
for a refused or failed request."""

from __future__ import annotations

import datetime
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from flowlib.errors import FlowError, RunNotFound
from scheduler.ui.session import Refused, Viewer, set_session

HERE = Path(__file__).parent
# No inline script or style anywhere: what a page runs or looks like comes from /static only.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a ?token= address never leaks to another site
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def when(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} m"


def shown_value(value: Any, limit: int = 80) -> str:
    """A parameter or metric value as one short line."""
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty(value: Any, limit: int = 20_000) -> str:
    text = json.dumps(value, indent=2, default=repr, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "\n… (cut)"


def short_path(path: str, limit: int = 48) -> str:
    """A file path as its tail (a code snapshot's folder is a long digest)."""
    return path if len(path) <= limit else "…" + path[-(limit - 1) :]


class Pages:
    """The templates of one server."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every template, whatever its name
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(
            when=when, duration=duration, value=shown_value, pretty=pretty, shortpath=short_path
        )

    def render(self, viewer: Viewer | None, template: str, status: int = 200, **data: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(viewer=viewer, **data)
        response = HTMLResponse(html, status_code=status, headers=HEADERS)
        if viewer is not None and viewer.fresh and viewer.session:
            set_session(response, viewer.session)
        return response

    def fragment(self, template: str, **data: Any) -> str:
        return self.env.get_template(template).render(**data)

    def refused(self, refusal: Refused) -> Response:
        if refusal.kind == "signed_in":  # a page, not a redirect: SameSite=Strict cookies ride along
            response = self.render(None, "signed_in.html", target=refusal.target)
            set_session(response, refusal.token)
            return response
        if refusal.kind == "login":
            return self.render(None, "login.html", status=refusal.status, message=refusal.message)
        return self.render(None, "error.html", status=refusal.status, message=refusal.message)

    def guarded(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a page handler: a refusal, a missing run, a FlowError become pages, not JSON."""

        def answer(exc: Exception) -> Response:
            if isinstance(exc, Refused):
                return self.refused(exc)
            if isinstance(exc, RunNotFound):
                return self.render(None, "error.html", status=404, message=str(exc))
            if isinstance(exc, HTTPException):
                return self.render(None, "error.html", status=exc.status_code, message=str(exc.detail))
            return self.render(None, "error.html", status=400, message=str(exc))

        caught = (Refused, FlowError, HTTPException)
        if _is_async(handler):

            @functools.wraps(handler)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await handler(*args, **kwargs)
                except caught as exc:
                    return answer(exc)

            return run_async

        @functools.wraps(handler)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except caught as exc:
                return answer(exc)

        return run


def _is_async(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


async def form_of(request: Request, limit: int = 1_000_000) -> dict[str, str]:
    """An urlencoded form body as name -> value (the last of a repeated name wins)."""
    from urllib.parse import parse_qsl

    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, "the form is too large")
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
