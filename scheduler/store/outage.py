"""Riding through a database that stops answering for a while (a PostgreSQL restart, a failover).

A scheduler's writes are retried on a fresh connection, with backoff, for up to `limit_s`
seconds; the runs pause meanwhile (their workers go on, and their results wait in the
driver's inbox). Past the limit the error goes up and the driver stops those runs, which then
read `interrupted`, so `flow resume` continues them. Errors that are not about reaching the
database (a constraint, a bad statement) are never retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")
OUTAGE_S = 60.0  # [flow] db_outage_seconds
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached (worth waiting for), not that it
    refused the statement."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError) and "locked" not in str(exc.orig)


@dataclass
class Outage:
    """How long to wait for the database, and whom to tell."""

    limit_s: float = OUTAGE_S
    warn: Callable[[str], None] = field(default=lambda text: None)
    sleep: Callable[[float], None] = time.sleep

    def ride(self, attempt: Callable[[], T]) -> T:
        """`attempt()` until it returns, retrying while the database is unreachable."""
        started = None
        delay = FIRST_DELAY_S
        while True:
            try:
                result = attempt()
            except Exception as exc:
                if not unreachable(exc):
                    raise
                now = time.monotonic()
                if started is None:
                    started = now
                    self.warn(
                        f"the database does not answer ({one_line(exc)}); the runs wait for it "
                        f"(up to {self.limit_s:g} s, [flow] db_outage_seconds)"
                    )
                if now - started >= self.limit_s:
                    raise
                self.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            if started is not None:
                self.warn(
                    f"the database answers again after {time.monotonic() - started:.1f} s; the runs go on"
                )
            return result


def one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
