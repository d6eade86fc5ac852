"""The run's DAG as SVG: one box per node, map or folded crowd, coloured by state, with a
stacked bar of its items' states; each box links to its node's page."""

from __future__ import annotations

from urllib.parse import quote

from markupsafe import Markup

from scheduler.ui import status
from scheduler.ui.layout import BOX_H, BOX_W
from scheduler.ui.run_view import BoxState, Drawing, label
from scheduler.ui.svg import el, num, shorten, svg

BAR_H = 5.0


def draw(run_id: str, drawing: Drawing, states: list[BoxState]) -> Markup:
    shape, placed = drawing.shape, drawing.placed
    if not shape.boxes:
        return Markup('<p class="muted">This run has no nodes.</p>')
    marker = el(
        "defs",
        {},
        el(
            "marker",
            {
                "id": "arrow",
                "viewBox": "0 0 10 10",
                "refX": "9",
                "refY": "5",
                "markerWidth": "7",
                "markerHeight": "7",
                "orient": "auto-start-reverse",
            },
            el("path", {"d": "M 0 0 L 10 5 L 0 10 z", "class": "arrowhead"}),
        ),
    )
    lines = [
        el("path", {"d": _curve(points), "class": "edge", "marker_end": "url(#arrow)"})
        for points in placed.routes
    ]
    boxes = [
        _box(run_id, i, shape.boxes[i], states[i], placed.x[i], placed.y[i]) for i in range(len(shape.boxes))
    ]
    return svg(
        placed.width,
        placed.height,
        marker,
        el("g", {"class": "edges"}, *lines),
        el("g", {"class": "boxes"}, *boxes),
        label="the run's DAG",
        cls="dag",
    )


def _box(run_id: str, index: int, box, state: BoxState, cx: float, cy: float) -> Markup:  # type: ignore[no-untyped-def]
    x, y = cx - BOX_W / 2, cy - BOX_H / 2
    name = label(box, state)
    counts = status.describe(state.counts) or state.status
    if box.kind == "task":
        counts = state.status.replace("_", " ")
    parts = [
        el("title", {}, f"{name}\n{box.operator}\n{counts}"),
        el("rect", {"x": x, "y": y, "width": BOX_W, "height": BOX_H, "rx": "6", "class": "frame"}),
        el("text", {"x": x + 10, "y": y + 20, "class": "name"}, shorten(name, 28)),
        el("text", {"x": x + 10, "y": y + 37, "class": "counts"}, shorten(counts, 34)),
    ]
    total = sum(state.counts.values())
    if box.kind != "task" and total:
        at = x + 6
        span = BOX_W - 12
        for key in status.ORDER:
            n = state.counts.get(key, 0)
            if not n:
                continue
            width = span * n / total
            parts.append(
                el(
                    "rect",
                    {
                        "x": at,
                        "y": y + BOX_H - BAR_H - 4,
                        "width": max(width, 1.0),
                        "height": BAR_H,
                        "class": f"bar st-{key}",
                    },
                )
            )
            at += width
    href = f"/runs/{quote(run_id)}/nodes/{quote(box.name, safe='')}"
    return el(
        "a",
        {"href": href, "class": f"box st-{state.status} kind-{box.kind}", "data_box": str(index)},
        *parts,
    )


def _curve(points: list[tuple[float, float]]) -> str:
    """A smooth vertical curve through the points."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{num(x0)},{num(y0)}"]
    for x1, y1 in rest:
        middle = (y0 + y1) / 2
        parts.append(f"C{num(x0)},{num(middle)} {num(x1)},{num(middle)} {num(x1)},{num(y1)}")
        x0, y0 = x1, y1
    return " ".join(parts)
