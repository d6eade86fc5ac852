"""What every peer benchmark shares: the command line, the expected answers, the JSON report.

Runs inside the peers' venv, so it imports nothing but the standard library.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

SHAPES = ("fan-out", "chain")

T = TypeVar("T")


def parse_args(description: str, variants: tuple[str, ...] = ()) -> argparse.Namespace:
    """Read --shape and --n (and --variant where a peer is measured in several modes)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--n", type=int, required=True)
    if variants:
        parser.add_argument("--variant", choices=variants, default=variants[0])
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    return args


def expected(shape: str, n: int) -> int:
    """Return the answer both DAGs must produce: a check that the peer really ran every node."""
    # fan-out: n no-ops return 0..n-1 and the gather sums them; chain: n steps each add one to 0.
    return n * (n - 1) // 2 if shape == "fan-out" else n


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Call fn and return its result with the wall time it took, in seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak RSS of this process plus that of its largest finished child, in MB.

    Linux reports ru_maxrss in KiB, and for RUSAGE_CHILDREN the peak of the largest
    single descendant that has been waited for, not a sum: stop servers and workers
    before calling this so that they count.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + children) / 1024, 1)


def report(peer: str, shape: str, n: int, result: int, wall_s: float, version: str, **extra: Any) -> None:
    """Check the DAG's answer and print the one JSON line the runner parses."""
    if result != expected(shape, n):
        sys.exit(f"{peer} {shape} n={n}: got {result!r}, expected {expected(shape, n)}")
    line = {
        "peer": peer,
        "shape": shape,
        "n": n,
        "wall_s": round(wall_s, 4),
        "per_node_ms": round(wall_s * 1000 / n, 4),
        "peak_rss_mb": peak_rss_mb(),
        "version": version,
        **{key: round(value, 4) if isinstance(value, float) else value for key, value in extra.items()},
    }
    sys.stdout.flush()
    print(json.dumps(line), flush=True)
