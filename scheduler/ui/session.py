"""Who is looking at a page: the API's bearer token, or the session cookie that opening any page
with `?token=…` sets. State changes (POST forms) need that session and its CSRF token.

The cookie holds the token itself (the API reads the same cookie), `HttpOnly` so no script can
read it and `SameSite=Strict` so no other site's page can make the browser send it. A CSRF
token is an HMAC of the session under the server's secret, carried by every form.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from starlette.requests import Request

from scheduler.server.auth import User
from scheduler.server.context import SESSION_COOKIE, ServerContext


@dataclass
class Viewer:
    user: User
    session: str | None  # the session cookie's value (None: a bearer token without a session)
    csrf: str  # what this viewer's forms carry ("" without a session)
    fresh: bool = False  # a session made now (no-auth servers): the response sets its cookie


class Refused(Exception):
    """The request ends here with this answer (a login page, a 403, the page that signs in)."""

    def __init__(
        self, status: int, kind: str, message: str = "", *, target: str = "", token: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.target, self.token = target, token


def identify(ctx: ServerContext, request: Request) -> Viewer:
    """The viewer of a page request, else Refused: 401 (a login page) or the sign-in page."""
    offered = request.query_params.get("token")
    if offered is not None:
        if ctx.user(offered) is None or not offered:
            raise Refused(401, "login", "That token is not valid (or it was revoked).")
        raise Refused(200, "signed_in", target=_without_token(request), token=offered)
    header = request.headers.get("authorization", "")
    session = request.cookies.get(SESSION_COOKIE) or None
    if header.lower().startswith("bearer "):
        user = ctx.user(header[7:].strip())
        if user is None:
            raise Refused(401, "login", "That token is not valid (or it was revoked).")
        return Viewer(user, session, ctx.csrf(session) if session else "")
    if session is not None:
        user = ctx.user(session)
        if user is None:
            raise Refused(401, "login", "Your session has ended: sign in again.")
        return Viewer(user, session, ctx.csrf(session))
    if not ctx.auth:  # no tokens on this server: a session still ties forms to this browser
        session = secrets.token_urlsafe(24)
        user = ctx.user(None)
        assert user is not None
        return Viewer(user, session, ctx.csrf(session), fresh=True)
    raise Refused(401, "login")


def check_form(ctx: ServerContext, request: Request, form: dict[str, str]) -> Viewer:
    """The viewer of a state-changing request: its session cookie and CSRF token must match."""
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        raise Refused(403, "error", "This needs a browser session: open the page again and retry.")
    sent = form.get("csrf", "")
    if not hmac.compare_digest(sent.encode(), ctx.csrf(session).encode()):
        raise Refused(
            403, "error", "The form's CSRF token does not match your session: reload the page and retry."
        )
    user = ctx.user(session)
    if user is None:
        raise Refused(401, "login", "Your session has ended: sign in again.")
    return Viewer(user, session, ctx.csrf(session))


def _without_token(request: Request) -> str:
    """The same page's address without its token (a path on this server, never another site)."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    path = "/" + quote(request.url.path.lstrip("/\\"), safe="/-._~!$&'()*+,;=:@")
    return path + ("?" + urlencode(rest) if rest else "")


def set_session(response, token: str) -> None:  # type: ignore[no-untyped-def]
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", path="/")
