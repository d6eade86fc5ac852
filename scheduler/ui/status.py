"""Node and run states as the pages show them: their order, colours (CSS classes) and how a
box standing for many nodes sums them up."""

from __future__ import annotations

from collections import Counter

# the order counts are listed in, and the stacked bar of a folded box is drawn in
ORDER = (
    "succeeded",
    "cached",
    "running",
    "queued",
    "pending",
    "failed",
    "upstream_failed",
    "cancelled",
    "interrupted",
)
DONE = {"succeeded", "cached"}
WAITING = {"queued", "pending"}
ACTIVE_RUN = {"queued", "pending", "running"}


def overall(counts: Counter) -> str:
    """One state for a box of many nodes: running while any runs (or some are done and some wait),
    else the worst way any ended, else waiting, else done."""
    present = {status for status, n in counts.items() if n}
    if not present:
        return "pending"
    if "running" in present or (present & DONE and present & WAITING):
        return "running"
    for status in ("failed", "interrupted", "upstream_failed", "cancelled", "queued", "pending"):
        if status in present:
            return status
    return "cached" if present == {"cached"} else "succeeded"


def describe(counts: Counter) -> str:
    """`97 succeeded, 3 running` (zero counts left out)."""
    known = [f"{counts[s]} {s.replace('_', ' ')}" for s in ORDER if counts.get(s)]
    others = [f"{n} {s}" for s, n in sorted(counts.items()) if n and s not in ORDER]
    return ", ".join(known + others)
