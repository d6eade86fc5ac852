"""Line charts of metrics as SVG, drawn on the server: axes with round ticks, one line per
series (overlaid for a comparison), an optional min-max band, a legend of escaped names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from markupsafe import Markup

from scheduler.ui.svg import el, num, path, shorten, svg

PALETTE = ("#3366cc", "#dc6b19", "#2a9d4b", "#b8336a", "#7a5cc7", "#a07c10", "#1b8a8f", "#666666")
W, H = 440.0, 230.0
DRAWN = 400  # points per line at most: a longer series is thinned to its extremes per bucket
LEFT, RIGHT, TOP, BOTTOM = 52.0, 14.0, 26.0, 34.0


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    band: list[tuple[float, float, float]] = field(default_factory=list)  # (x, low, high)
    dots: bool = False  # points, not a line (a scatter)


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high == low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= step * factor:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def tick_text(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2g}"
    return f"{value:.6g}"


def line_chart(title: str, series: list[Series], *, x_label: str = "step") -> Markup:
    """A chart of the series (each a list of (x, y), in order)."""
    values = [y for s in series for _, y in s.points if math.isfinite(y)]
    values += [v for s in series for _, lo, hi in s.band for v in (lo, hi) if math.isfinite(v)]
    xs = [x for s in series for x, _ in s.points]
    if not values or not xs:
        return Markup("")
    if all(len(s.points) <= 1 for s in series):  # one value each: a chart would say less than the number
        return _values_card(title, series)
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(values), max(values)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts = [el("text", {"x": LEFT, "y": 16.0, "class": "chart-title"}, shorten(title, 60))]
    x_ticks = ticks(x0, x1)
    if all(float(x).is_integer() for x in xs):  # steps and trial numbers: no ticks between them
        x_ticks = [t for t in x_ticks if float(t).is_integer()] or x_ticks
    parts += _axes(x_ticks, ticks(y0, y1), sx, sy, plot_w, plot_h, x_label)
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        if s.band:
            band = s.band[:: max(1, len(s.band) // DRAWN)]
            upper = [(sx(x), sy(hi)) for x, _, hi in band]
            lower = [(sx(x), sy(lo)) for x, lo, _ in reversed(band)]
            parts.append(el("path", {"d": path(upper + lower) + " Z", "fill": colour, "class": "band"}))
        points = [(sx(x), sy(y)) for x, y in thinned(s.points) if math.isfinite(y)]
        if s.dots or len(points) == 1:
            parts += [el("circle", {"cx": x, "cy": y, "r": "3.5", "fill": colour}) for x, y in points]
        elif points:
            parts.append(
                el("path", {"d": path(points), "stroke": colour, "class": "line"}, el("title", {}, s.label))
            )
    legend = [
        el(
            "span",
            {"class": "legend-item"},
            el("span", {"class": f"swatch c{i % len(PALETTE)}"}),
            shorten(s.label, 40),
        )
        for i, s in enumerate(series[:12])
    ]
    more = f" and {len(series) - 12} more" if len(series) > 12 else ""
    return el(
        "figure",
        {"class": "chart-box"},
        svg(W, H, *parts, label=title),
        el("figcaption", {"class": "legend"}, *legend, more)
        if len(series) > 1 or series[0].label != title
        else Markup(""),
    )


def thinned(points: list[tuple[float, float]], limit: int = DRAWN) -> list[tuple[float, float]]:
    """At most `limit` points: in each of limit/2 buckets, its lowest and highest (the shape stays)."""
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / (limit // 2))
    kept = []
    for start in range(0, len(points), size):
        bucket = [p for p in points[start : start + size] if math.isfinite(p[1])]
        if bucket:
            low, high = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
            kept += sorted({low, high}, key=lambda p: p[0])
    return kept


def _values_card(title: str, series: list[Series]) -> Markup:
    rows = [
        el(
            "tr",
            {},
            el("td", {}, shorten(s.label, 40)),
            el("td", {"class": "num"}, tick_text(s.points[0][1])),
        )
        for s in series[:20]
        if s.points
    ]
    return el(
        "figure",
        {"class": "chart-box value-card"},
        el("figcaption", {"class": "chart-title"}, shorten(title, 60)),
        el("table", {"class": "plain"}, *rows),
    )


def _axes(xt, yt, sx, sy, plot_w: float, plot_h: float, x_label: str) -> list[Markup]:  # type: ignore[no-untyped-def]
    parts = [el("rect", {"x": LEFT, "y": TOP, "width": plot_w, "height": plot_h, "class": "plot"})]
    for y in yt:
        parts.append(el("line", {"x1": LEFT, "x2": LEFT + plot_w, "y1": sy(y), "y2": sy(y), "class": "grid"}))
        parts.append(el("text", {"x": LEFT - 6, "y": sy(y) + 4, "class": "tick end"}, tick_text(y)))
    for x in xt:
        parts.append(
            el(
                "line",
                {"x1": sx(x), "x2": sx(x), "y1": TOP + plot_h, "y2": TOP + plot_h + 4, "class": "axis"},
            )
        )
        parts.append(el("text", {"x": sx(x), "y": TOP + plot_h + 16, "class": "tick middle"}, tick_text(x)))
    parts.append(el("text", {"x": LEFT + plot_w, "y": H - 4, "class": "tick end"}, x_label))
    return parts


def timeline(
    rows: list[tuple[str, str, float | None, float | None, str]], start: float, now: float
) -> Markup:
    """A Gantt chart: (label, state, started, ended or None while running, link) per row."""
    rows = [row for row in rows if row[2] is not None]
    if not rows:
        return Markup('<p class="muted">Nothing has started yet.</p>')
    end = max([now if row[3] is None else row[3] for row in rows] + [start + 1e-3])
    label_w, width, row_h = 190.0, 920.0, 20.0
    plot_w = width - label_w - 20
    height = TOP + len(rows) * row_h + 10

    def sx(t: float) -> float:
        return label_w + (t - start) / (end - start) * plot_w

    parts = []
    for t in ticks(0.0, end - start, 6):
        parts.append(
            el(
                "line",
                {"x1": sx(start + t), "x2": sx(start + t), "y1": TOP - 4, "y2": height - 6, "class": "grid"},
            )
        )
        parts.append(
            el("text", {"x": sx(start + t), "y": TOP - 8, "class": "tick middle"}, f"{tick_text(t)} s")
        )
    for i, (name, state, started, ended, href) in enumerate(rows):
        y = TOP + i * row_h
        stop = ended if ended is not None else now
        bar = el(
            "rect",
            {
                "x": sx(started),  # type: ignore[arg-type]
                "y": y + 3,
                "width": max(sx(stop) - sx(started), 2.0),  # type: ignore[arg-type]
                "height": row_h - 6,
                "rx": "3",
                "class": f"span st-{state}",
            },
            el("title", {}, f"{name}: {num(stop - started)} s ({state})"),  # type: ignore[operator]
        )
        parts.append(
            el(
                "a",
                {"href": href},
                el("text", {"x": label_w - 8, "y": y + 14, "class": "tick end"}, shorten(name, 28)),
                bar,
            )
        )
    return svg(width, height, *parts, label="timeline of the nodes", cls="timeline")
