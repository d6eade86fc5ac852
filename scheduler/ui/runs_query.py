"""Read model of the runs page: runs filtered, sorted and paged in SQL, each with the last value
it logged of each metric. A filter SQL cannot answer the same way on every backend (a
parameter's value in the JSON column, a run whose scheduler died) is applied while streaming."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, Text, cast, func, select

from scheduler.store.listing import STORED
from scheduler.store.models import metrics, runs
from scheduler.store.readback import shown_status

_R, _M = runs.c, metrics.c
PAGE = 50
METRIC_COLUMNS = 6
COLUMNS = (
    _R.id,
    _R.workflow,
    _R.status,
    _R.created_at,
    _R.started_at,
    _R.ended_at,
    _R.user,
    _R.params,
    _R.deployment,
    _R.deployment_version,
    _R.sweep,
    _R.trial,
    _R.host,
    _R.pid,
    _R.heartbeat_at,
    _R.server,
    _R.error,
)
SORTS = ("created", "started", "duration", "workflow", "status", "user", "deployment", "id")


@dataclass
class Query:
    workflow: str = ""
    status: str = ""
    user: str = ""
    param: str = ""  # NAME=VALUE
    sort: str = "created"
    desc: bool = True
    page: int = 1

    def param_test(self) -> tuple[str, str] | None:
        name, sep, value = self.param.partition("=")
        if not name.strip():
            return None
        return name.strip(), value.strip() if sep else ""


@dataclass
class Listed:
    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    metric_names: list[str] = field(default_factory=list)


def _order(query: Select, q: Query) -> Select:
    now = time.time()
    key = {
        "created": _R.created_at,
        "started": _R.started_at,
        "duration": func.coalesce(_R.ended_at, now) - _R.started_at,
        "workflow": _R.workflow,
        "status": _R.status,
        "user": _R.user,
        "deployment": _R.deployment,
        "id": _R.id,
    }.get(q.sort, _R.created_at)
    ordered = key.desc() if q.desc else key.asc()
    tie = _R.created_at.desc() if q.desc else _R.created_at.asc()
    return query.order_by(ordered.nulls_last() if q.sort in ("started", "duration") else ordered, tie, _R.id)


def matches(params: Any, name: str, text: str) -> bool:
    """Whether a run's parameter `name` has the value written as `text` (as -p writes it, or JSON)."""
    if not isinstance(params, dict) or name not in params:
        return False
    value = params[name]
    if not text:
        return True
    if isinstance(value, str):
        return value == text
    try:
        return json.loads(text) == value
    except ValueError:
        return text.lower() == str(value).lower()


def _needle(text: str) -> str | None:
    """Text that the JSON of every matching value contains, or None when there is no such text."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 5.0 is written 5 in an int parameter, 5.0 in a float one
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str) and value and all(c.isascii() and (c.isalnum() or c in "._-+ ") for c in value):
        return value
    return None


def find(conn: Connection, q: Query) -> Listed:
    """One page of runs as the runs page shows them."""
    query = select(*COLUMNS)
    for column, value in (("workflow", q.workflow), ("user", q.user)):
        if value:
            query = query.where(_R[column] == value)
    if q.status:
        query = query.where(_R.status.in_(STORED.get(q.status, [q.status])))
    test = q.param_test()
    needle = _needle(test[1]) if test is not None else None
    if needle:  # a cheap first cut in SQL: the value's JSON text is in the parameters' JSON
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(cast(_R.params, Text).ilike(pattern, escape="\\"))
    streamed = test is not None or q.status in STORED  # shown status or a parameter: checked here
    start = (max(q.page, 1) - 1) * PAGE
    if not streamed:
        total = conn.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = list(conn.execute(_order(query, q).limit(PAGE).offset(start)))
    else:
        kept = []
        for row in conn.execute(_order(query, q)):
            if q.status and shown_status(row) != q.status:
                continue
            if test is not None and not matches(row.params, *test):
                continue
            kept.append(row)
        total, rows = len(kept), kept[start : start + PAGE]
    shown = [_shown(row) for row in rows]
    names = _last_metrics(conn, shown)
    pages = max(1, (total + PAGE - 1) // PAGE)
    return Listed(shown, total, min(max(q.page, 1), pages), pages, names)


def _shown(row: Any) -> dict[str, Any]:
    state = shown_status(row)
    ended = row.ended_at if state not in ("running", "pending", "queued") else None
    duration = None
    if row.started_at is not None:
        duration = (ended if ended is not None else time.time()) - row.started_at
    return {"row": row, "status": state, "duration": duration, "metrics": {}}


def _last_metrics(conn: Connection, shown: list[dict[str, Any]]) -> list[str]:
    """Fill each run's last value of each metric; return the metric columns worth showing."""
    if not shown:
        return []
    ids = [item["row"].id for item in shown]
    last = select(func.max(_M.id)).where(_M.run_id.in_(ids)).group_by(_M.run_id, _M.name)
    found = conn.execute(select(_M.run_id, _M.name, _M.value).where(_M.id.in_(last.scalar_subquery())))
    by_run = {item["row"].id: item["metrics"] for item in shown}
    seen: Counter = Counter()
    for run_id, name, value in found:
        by_run[run_id][name] = value
        seen[name] += 1
    return [name for name, _ in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))[:METRIC_COLUMNS]]


def param_names(shown: list[dict[str, Any]], limit: int = 6) -> list[str]:
    """The parameters worth a column: those the page's runs have most often."""
    seen: Counter = Counter()
    for item in shown:
        if isinstance(item["row"].params, dict):
            seen.update(item["row"].params.keys())
    return [name for name, _ in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
