"""Progress of a run on stderr: a live rich line on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Any

PLAIN_LINE_LIMIT = 200  # above this many nodes, plain mode prints failures and a summary only
SHOWN = ("succeeded", "cached", "failed", "upstream_failed")


class Progress:
    """Counts node states; callable as the scheduler's progress hook (from any thread)."""

    def __init__(self, total_hint: int = 0, *, live: bool | None = None) -> None:
        self.live = sys.stderr.isatty() if live is None else live
        self.states: dict[str, str] = {}
        self.lock = threading.Lock()
        self.total_hint = total_hint
        self.run_id: str | None = None
        self._display: Any = None
        self._started = time.monotonic()

    def recorded(self, run_id: str) -> None:
        self.run_id = run_id
        if self.live:
            from rich.console import Console
            from rich.live import Live

            # drawn from the counts on each refresh, not rebuilt per node state change (a
            # chain of quick nodes changes state thousands of times a second)
            self._display = Live(
                get_renderable=self._render,
                console=Console(stderr=True),
                refresh_per_second=8,
                transient=True,
            )
            self._display.start()
        else:
            print(f"run {run_id} started", file=sys.stderr, flush=True)

    def __call__(self, name: str, status: str, info: dict[str, Any]) -> None:
        if status == "retrying":
            self._line(_retrying(name, info))
            return
        with self.lock:
            self.states[name] = status
        if (
            self._display is None
            and status in SHOWN
            and (status == "failed" or max(self.total_hint, len(self.states)) <= PLAIN_LINE_LIMIT)
        ):
            print(f"  {status:<15} {name}", file=sys.stderr, flush=True)

    def _line(self, text: str) -> None:
        if self._display is not None:
            self._display.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def _counts(self) -> Counter:
        with self.lock:
            return Counter(self.states.values())

    def _render(self) -> Any:
        from rich.text import Text

        counts = self._counts()
        done = counts["succeeded"] + counts["cached"]
        elapsed = time.monotonic() - self._started
        text = Text()
        text.append(f"run {self.run_id}  ", style="bold")
        text.append(f"{done} done", style="green")
        text.append(f" ({counts['cached']} cached)  ")
        text.append(f"{counts['running']} running  ", style="cyan")
        text.append(f"{counts['queued']} queued  ")
        text.append(f"{counts['failed']} failed", style="red" if counts["failed"] else "")
        text.append(f"  {elapsed:.1f}s")
        return text

    def close(self, status: str, statuses: list[str] | None = None) -> None:
        """Stop the live line and print the summary (counted from the recorded `statuses` when given)."""
        if self._display is not None:
            self._display.stop()
        counts = Counter(map(str, statuses)) if statuses is not None else self._counts()
        elapsed = time.monotonic() - self._started
        print(
            f"run {self.run_id} {status}: {summary(counts)}, in {elapsed:.2f}s", file=sys.stderr, flush=True
        )


def summary(counts: Counter) -> str:
    """`N succeeded, N cached, N failed, N cancelled, N not run` (zero counts of the last three left out)."""
    not_run = counts["upstream_failed"] + counts["pending"] + counts["queued"] + counts["interrupted"]
    parts = [f"{counts['succeeded']} succeeded", f"{counts['cached']} cached"]
    for label, count in (
        ("failed", counts["failed"]),
        ("cancelled", counts["cancelled"]),
        ("not run", not_run),
    ):
        if count or label == "failed":
            parts.append(f"{count} {label}")
    return ", ".join(parts)


def _retrying(name: str, info: dict[str, Any]) -> str:
    error = info.get("error") or {}
    message = " ".join(str(error.get("message") or "").split())
    if len(message) > 120:
        message = message[:117] + "..."
    return f"  retrying        {name} (attempt {info.get('attempt')}/{info.get('of')}): {error.get('type')}: {message}"
