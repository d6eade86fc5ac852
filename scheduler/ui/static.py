"""The UI's stylesheet and scripts, served from the package (no CDN, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

FOLDER = Path(__file__).parent / "static"
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def add(ui: APIRouter) -> None:
    files = {path.name: path for path in FOLDER.iterdir() if path.suffix in TYPES}

    @ui.get("/static/{name}")
    def static_file(name: str) -> Response:
        """A file of the package's static folder (no token needed: nothing in it is private)."""
        path = files.get(name)
        if path is None:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(
            path.read_bytes(),
            media_type=TYPES[path.suffix],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )
