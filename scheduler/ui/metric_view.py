"""Metrics as chart series: per node, per run (a map's many items summed up as a mean with its
min-max band), and overlaid across runs for a comparison."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Row, func, select

from scheduler.store.models import metrics, nodes
from scheduler.ui.charts import Series

AGGREGATE_AT = 5000  # metric rows of a run past which its charts are summed up in SQL
SEPARATE = 8  # past this many nodes logging one metric in one box, draw their mean and range
ORIGINS_FOLLOWED = 50  # cached nodes whose metrics are looked up in the runs that computed them


def rows_of(conn: Connection, run: Row, node: str | None = None) -> list[dict[str, Any]]:
    """The metrics a run (or one node) logged; a cached node's come from the run that computed it,
    when the run has few cached nodes (each one is a lookup)."""
    from scheduler.store.logs import node_metrics

    m = metrics.c
    query = select(m.node, m.attempt, m.name, m.value, m.step).where(m.run_id == run.id)
    if node is not None:
        query = query.where(m.node == node)
    own = [
        {"node": n, "attempt": a, "name": name, "value": v, "step": step}
        for n, a, name, v, step in conn.execute(query.order_by(m.id))
    ]
    if own and node is not None:
        return own
    cached = select(func.count()).where(nodes.c.run_id == run.id, nodes.c.cached)
    if node is not None:
        cached = cached.where(nodes.c.name == node)
    count = conn.scalar(cached) or 0
    if not count or count > ORIGINS_FOLLOWED:
        return own
    found = node_metrics(conn, run)
    return [row for row in found if node is None or row["node"] == node]


def _points(rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(step, value) in logging order; a metric logged without steps counts 0, 1, 2, …"""
    return [
        (float(row["step"]) if row["step"] is not None else float(i), float(row["value"]))
        for i, row in enumerate(rows)
    ]


def by_name(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        found[row["name"]].append(row)
    return dict(sorted(found.items()))


def node_charts(rows: list[dict[str, Any]]) -> dict[str, list[Series]]:
    """One chart per metric of a node, one line per attempt."""
    charts = {}
    for name, logged in by_name(rows).items():
        attempts: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in logged:
            attempts[row["attempt"]].append(row)
        charts[name] = [
            Series(f"attempt {number}" if len(attempts) > 1 else name, _points(found))
            for number, found in sorted(attempts.items())
        ]
    return charts


def run_charts(rows: list[dict[str, Any]], box_of: dict[str, str]) -> dict[str, list[Series]]:
    """One chart per metric of a run: a line per node, or per box of many nodes its mean and range.
    `box_of`: node name -> the box it is drawn in (a map's items -> the map)."""
    charts = {}
    for name, logged in by_name(rows).items():
        per_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in logged:
            per_node[row["node"]].append(row)
        per_box: dict[str, list[str]] = defaultdict(list)
        for node in per_node:
            per_box[box_of.get(node, node)].append(node)
        series = []
        for box, members in per_box.items():
            if len(members) <= SEPARATE:
                series += [Series(node, _points(per_node[node])) for node in members]
            else:
                series.append(_summed(box, [per_node[node] for node in members]))
        charts[name] = series
    return charts


def run_chart_data(conn: Connection, run: Row, box_of: dict[str, str]) -> dict[str, list[Series]]:
    """The run page's charts; a run with many metric rows is summed up by the database (per
    metric, box and step: the mean with its min-max band), so the page stays fast."""
    m, n = metrics.c, nodes.c
    if (conn.scalar(select(func.count()).where(m.run_id == run.id)) or 0) <= AGGREGATE_AT:
        return run_charts(rows_of(conn, run), box_of)
    where = func.coalesce(n.map_parent, m.node)
    query = (
        select(m.name, where, m.step, func.count(), func.avg(m.value), func.min(m.value), func.max(m.value))
        .select_from(metrics.join(nodes, (n.run_id == m.run_id) & (n.name == m.node)))
        .where(m.run_id == run.id)
        .group_by(m.name, where, m.step)
        .order_by(m.name, where, m.step)
    )
    merged: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(dict)
    for name, node, step, count, mean, low, high in conn.execute(query):
        box = box_of.get(node, node)
        at = merged[(name, box)].setdefault(float(step) if step is not None else 0.0, [0, 0.0, low, high])
        at[0], at[1] = at[0] + count, at[1] + mean * count
        at[2], at[3] = min(at[2], low), max(at[3], high)
    charts: dict[str, list[Series]] = defaultdict(list)
    for (name, box), steps in sorted(merged.items()):
        xs = sorted(steps)
        counts = max(steps[x][0] for x in xs)
        label = f"{box} (mean of {counts}, min-max)" if counts > 1 else box
        points = [(x, steps[x][1] / steps[x][0]) for x in xs]
        band = [(x, steps[x][2], steps[x][3]) for x in xs] if counts > 1 else []
        charts[name].append(Series(label, points, band))
    return dict(charts)


def _summed(box: str, logs: list[list[dict[str, Any]]]) -> Series:
    """Many nodes' lines as one: the mean at each step with the min-max band; nodes that each
    logged one value (no steps) are drawn by item instead."""
    if all(len(log) == 1 and log[0]["step"] is None for log in logs):
        return Series(f"{box} (by item)", [(float(i), float(log[0]["value"])) for i, log in enumerate(logs)])
    at: dict[float, list[float]] = defaultdict(list)
    for log in logs:
        for x, y in _points(log):
            at[x].append(y)
    steps = sorted(at)
    mean = [(x, sum(at[x]) / len(at[x])) for x in steps]
    band = [(x, min(at[x]), max(at[x])) for x in steps]
    return Series(f"{box} (mean of {len(logs)}, min-max)", mean, band)


def final_values(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The last value logged of each metric."""
    return {name: float(logged[-1]["value"]) for name, logged in by_name(rows).items()}


def overlaid(per_run: dict[str, list[dict[str, Any]]]) -> dict[str, list[Series]]:
    """For a comparison: per metric, one line per run (the mean over its nodes at each step)."""
    charts: dict[str, list[Series]] = defaultdict(list)
    for run_id, rows in per_run.items():
        for name, logged in by_name(rows).items():
            per_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in logged:
                per_node[row["node"]].append(row)
            if len(per_node) == 1:
                charts[name].append(Series(run_id, _points(logged)))
            else:
                summed = _summed(run_id, [per_node[n] for n in sorted(per_node)])
                charts[name].append(Series(run_id, summed.points))
    return dict(sorted(charts.items()))
