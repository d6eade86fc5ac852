"""Read model of the run page: the DAG's boxes with their live counts, the timeline, the
outputs when they are small enough to show. Reads grow with the boxes, not the nodes: a map's
items are counted by one GROUP BY."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, select

from scheduler.store import repository as repo
from scheduler.store.models import edges, nodes
from scheduler.ui import dag, status
from scheduler.ui.layout import Placed, layout

_N = nodes.c
OUTPUT_BYTES = 256 * 1024  # larger outputs are linked (the JSON API), not loaded into the page
SHAPES_KEPT = 64


@dataclass
class BoxState:
    status: str
    counts: Counter
    started: float | None = None
    ended: float | None = None
    items: int = 0  # a map's items found so far


@dataclass
class Drawing:
    shape: dag.Shape
    placed: Placed


@dataclass
class Shapes:
    """Layouts by plan digest (a plan never changes), kept for the server's life, newest first."""

    kept: OrderedDict[str, Drawing] = field(default_factory=OrderedDict)

    def of(self, conn: Connection, run: Row) -> Drawing:
        digest = getattr(run, "plan_digest", None)
        if digest and digest in self.kept:
            self.kept.move_to_end(digest)
            return self.kept[digest]
        text = repo.load_plan_text(conn, digest) if digest else None
        if text is not None:
            shape = dag.from_plan_text(text)
        else:
            rows = conn.execute(
                select(_N.name, _N.operator, _N.map_parent).where(_N.run_id == run.id).order_by(_N.position)
            ).all()
            pairs = conn.execute(select(edges.c.src, edges.c.dst).where(edges.c.run_id == run.id)).all()
            shape = dag.from_rows(rows, [(a, b) for a, b in pairs])
        drawing = Drawing(shape, layout(len(shape.boxes), shape.edges))
        if digest and text is not None:
            self.kept[digest] = drawing
            while len(self.kept) > SHAPES_KEPT:
                self.kept.popitem(last=False)
        return drawing


def box_states(conn: Connection, run: Row, shape: dag.Shape, shown: str) -> list[BoxState]:
    """Each box's counts by state, first start and last end."""
    states = [BoxState("pending", Counter()) for _ in shape.boxes]
    interrupted = shown == "interrupted"

    def seen(box: int, state: str, count: int, started: Any, ended: Any) -> None:
        if interrupted and state in status.ACTIVE_RUN:
            state = "interrupted"
        target = states[box]
        target.counts[state] += count
        if started is not None:
            target.started = started if target.started is None else min(target.started, started)
        if ended is not None:
            target.ended = ended if target.ended is None else max(target.ended, ended)

    items = (
        select(_N.map_parent, _N.status, func.count(), func.min(_N.started_at), func.max(_N.ended_at))
        .where(_N.run_id == run.id, _N.map_parent.is_not(None))
        .group_by(_N.map_parent, _N.status)
    )
    has_items: set[int] = set()
    for parent, state, count, started, ended in conn.execute(items):
        box = shape.index.get(parent)
        if box is not None:
            seen(box, state, count, started, ended)
            states[box].items += count
            has_items.add(box)
    own = select(_N.name, _N.status, _N.started_at, _N.ended_at).where(
        _N.run_id == run.id, _N.map_parent.is_(None)
    )
    for name, state, started, ended in conn.execute(own):
        box = shape.index.get(name)
        if box is None:
            continue
        if box in has_items:  # a map's own row is its gather: it counts only when it failed itself
            if state == "failed":
                states[box].counts[state] += 1
            continue
        seen(box, state, 1, started, ended)
    for state in states:
        state.status = status.overall(state.counts)
        if state.status in status.ACTIVE_RUN:
            state.ended = None
    return states


def label(box: dag.Box, state: BoxState) -> str:
    """`train[0..99]` for a map, `leaf … leaf-50` for a folded crowd, else the node's name."""
    if box.kind == "map":
        return f"{box.name}[0..{state.items - 1}]" if state.items else f"{box.name}[…]"
    if box.kind == "group":
        return f"{box.members[0]} … {box.members[-1]}"
    return box.name


def failed_nodes(conn: Connection, run_id: str, limit: int = 20) -> list[Row]:
    """The first failed nodes (map items included) with their errors."""
    query = (
        select(_N.name, _N.error)
        .where(_N.run_id == run_id, _N.status == "failed")
        .order_by(_N.position, _N.id)
        .limit(limit)
    )
    return list(conn.execute(query))


def outputs_shown(engine: Engine, reader: Any, run: Row) -> tuple[Any, str | None]:
    """(the workflow's outputs as JSON, None), or (None, why they are not shown)."""
    if run.status != "succeeded" or run.outputs is None:
        return None, None
    from scheduler.store.outputs import run_values
    from scheduler.store.readback import _named_nodes

    with engine.connect() as conn:
        refs = repo.node_outputs(conn, run.id, sorted(_named_nodes(run.outputs)))
    size = sum(int(ref.get("size") or 0) for found in refs.values() for ref in found.values())
    if size > OUTPUT_BYTES:
        return None, f"the outputs are {size / 1e6:.1f} MB: open them as JSON"
    try:
        return run_values(engine, reader, run.id, imports=False), None
    except Exception as exc:
        return None, f"cannot show the outputs here: {exc}"


def elapsed(started: float | None, ended: float | None) -> float | None:
    if started is None:
        return None
    return (ended if ended is not None else time.time()) - started
