"""Headless Chromium for the web UI's tests: the system's browser driven by Playwright (never a
downloaded one), and screenshots of the pages the tests visit."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def skip_without_browser() -> Any:
    """The sync Playwright module, or a skip naming what is missing."""
    try:
        from playwright import sync_api
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; never `playwright install`)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    return sync_api


class Shots:
    """Screenshots of every page a test visits: under the test's tmp folder, and also under
    $FLOW_UI_SCREENSHOTS when it is set."""

    def __init__(self, folder: Path) -> None:
        self.folders = [folder]
        extra = os.environ.get("FLOW_UI_SCREENSHOTS")
        if extra:
            self.folders.append(Path(extra))
        for path in self.folders:
            path.mkdir(parents=True, exist_ok=True)

    def take(self, page: Any, name: str, *, full: bool = True) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        for folder in self.folders:
            page.screenshot(path=str(folder / f"{safe}.png"), full_page=full)
