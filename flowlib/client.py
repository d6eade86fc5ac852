"""A client of a `flow server`: JSON over HTTP (the standard library's urllib, nothing to install).

Which server: `--server URL`, else `FLOW_SERVER`; the token: `FLOW_TOKEN`, else `[server] token`
in the client's flow.toml. A server that cannot be reached, and a request it refuses, are
FlowErrors of one line (exit 2) naming the URL or the reason.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from flowlib.errors import FlowError, RunNotFound

TIMEOUT_S = 60.0


class ServerRefused(FlowError):
    """The server answered with an error (a 4xx or 5xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, url: str, token: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise FlowError(f"server URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.token = token

    def get(self, route: str, **query: Any) -> Any:
        shown = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items() if v is not None}
        suffix = "?" + urllib.parse.urlencode(shown) if shown else ""
        return self._call("GET", route + suffix)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call(
            "POST", path, json.dumps(body if body is not None else {}).encode(), "application/json"
        )

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def put_bytes(self, path: str, data: bytes) -> Any:
        return self._call("PUT", path, data, "application/octet-stream")

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ServerRefused as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _call(
        self, method: str, path: str, data: bytes | None = None, content_type: str | None = None
    ) -> Any:
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise _refusal(self.url, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FlowError(f"cannot reach the server at {self.url}: {reason}") from None
        return json.loads(body) if body else None


def _refusal(url: str, exc: urllib.error.HTTPError) -> FlowError:
    try:
        message = json.loads(exc.read()).get("error") or exc.reason
    except (ValueError, AttributeError):
        message = exc.reason
    if exc.code == 401:
        return ServerRefused(f"the server at {url} refused the request (401): {message}; set FLOW_TOKEN", 401)
    if exc.code == 404 and str(message).startswith("no run"):
        return RunNotFound(str(message))
    return ServerRefused(f"the server at {url} refused the request ({exc.code}): {message}", exc.code)


def server_url(option: str | None, *, environment: bool = True) -> str | None:
    """`--server`, else (unless `environment` is off, as for `flow run`) FLOW_SERVER."""
    if option:
        return option
    return os.environ.get("FLOW_SERVER") or None if environment else None


def connect(url: str) -> Client:
    """A client of the server at `url`, with the token this user has for it."""
    from flowlib.config import load

    token = os.environ.get("FLOW_TOKEN") or load().server.get("token")
    return Client(url, token)
