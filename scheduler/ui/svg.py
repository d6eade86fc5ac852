"""A tiny SVG writer: every attribute value and text is escaped, so user-written names, metric
names and parameter values can go into a drawing as they are."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape


def num(value: float) -> str:
    """A coordinate, short (two decimals at most)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def el(tag: str, attrs: dict[str, Any] | None = None, *children: Any) -> Markup:
    """`<tag attrs>children</tag>` (never self-closed: the same markup serves HTML): attrs escaped (None and False left out), str children escaped,
    Markup children (other elements) kept."""
    parts = [tag]
    for key, value in (attrs or {}).items():
        if value is None or value is False:
            continue
        shown = num(value) if isinstance(value, float) else str(value)
        parts.append(f'{key.rstrip("_").replace("_", "-")}="{escape(shown)}"')
    opening = " ".join(parts)
    inner = "".join(str(escape(child)) for child in children)
    return Markup(f"<{opening}>{inner}</{tag}>")


def svg(width: float, height: float, *children: Any, label: str = "", cls: str = "chart") -> Markup:
    """A standalone <svg> element of that size (it scales down with its container)."""
    return el(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": cls,
            "width": float(width),
            "height": float(height),
            "viewBox": f"0 0 {num(width)} {num(height)}",
            "role": "img",
            "aria_label": label or None,
        },
        *children,
    )


def path(points: list[tuple[float, float]]) -> str:
    """An SVG path through the points (straight segments)."""
    return "M" + " L".join(f"{num(x)},{num(y)}" for x, y in points)


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis (the full text goes into a <title>)."""
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"
