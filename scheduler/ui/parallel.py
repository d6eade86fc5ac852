"""A parallel-coordinates view as SVG: one vertical axis per parameter and one for the
objective, one line per trial, darker the better its objective."""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup

from scheduler.ui.charts import tick_text
from scheduler.ui.svg import el, path, shorten, svg

SHADES = ("#173f8a", "#3f6fb8", "#7c8fa6", "#d08a3c", "#e0662b")  # best to worst
MISSING = "#c9c9c9"


def _axis(values: list[Any]) -> tuple[Any, list[tuple[float, str]]]:
    """A function from a value to 0..1 on its axis, and the axis' labels (at 0..1)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers and len(numbers) == len([v for v in values if v is not None]):
        low, high = min(numbers), max(numbers)
        span = (high - low) or 1.0
        return (lambda v: None if v is None else (v - low) / span), [
            (1.0, tick_text(high)),
            (0.0, tick_text(low)),
        ]
    categories = sorted({repr(v) if not isinstance(v, str) else v for v in values if v is not None})
    where = {c: (i + 0.5) / len(categories) for i, c in enumerate(categories)}

    def place(v: Any) -> float | None:
        if v is None:
            return None
        return where[repr(v) if not isinstance(v, str) else v]

    return place, [(where[c], c) for c in categories]


def parallel(
    names: list[str], rows: list[tuple[list[Any], float | None]], objective: str, maximize: bool
) -> Markup:
    """`rows`: (the values of `names`, the objective) per trial."""
    if not rows:
        return Markup('<p class="muted">No trials yet.</p>')
    axes = [*names, objective or "objective"]
    columns = [[values[i] for values, _ in rows] for i in range(len(names))] + [[v for _, v in rows]]
    placed = [_axis(column) for column in columns]
    width = max(420.0, 150.0 * len(axes))
    height, top, bottom, left = 300.0, 34.0, 30.0, 60.0
    step = (width - 2 * left) / max(1, len(axes) - 1)

    def y(fraction: float) -> float:  # kept off the ends, so lines at the extremes stay visible
        return top + (1 - (0.04 + 0.92 * fraction)) * (height - top - bottom)

    scores = [v for _, v in rows if v is not None and math.isfinite(v)]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    parts = []
    for i, (_values, value) in enumerate(rows):
        points = []
        for j, (place, _) in enumerate(placed):
            at = place(columns[j][i])
            if at is not None:
                points.append((left + j * step, y(at)))
        if len(points) < 2:
            continue
        if value is None or not math.isfinite(value):
            colour = MISSING
        else:
            goodness = (value - low) / ((high - low) or 1.0)
            goodness = goodness if maximize else 1 - goodness
            colour = SHADES[min(len(SHADES) - 1, int((1 - goodness) * len(SHADES)))]
        parts.append(el("path", {"d": path(points), "stroke": colour, "class": "pc-line"}))
    for j, name in enumerate(axes):
        x = left + j * step
        parts.append(el("line", {"x1": x, "x2": x, "y1": top, "y2": height - bottom, "class": "pc-axis"}))
        parts.append(el("text", {"x": x, "y": top - 14, "class": "tick middle strong"}, shorten(name, 22)))
        for fraction, label in placed[j][1]:
            parts.append(el("text", {"x": x + 5, "y": y(fraction) + 4, "class": "tick"}, shorten(label, 14)))
    return svg(width, height, *parts, label="parallel coordinates of the trials", cls="parallel")
