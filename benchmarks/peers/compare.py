"""Print the peers' table, with each peer's per-node time as a multiple of flowlib's when given."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .runner import (
    DEFAULT_VENV,
    PEERS,
    SHAPES,
    PeerError,
    available,
    ensure_venv,
    max_n,
    measure,
    venv_size_mb,
)

NOTE = (
    "peers: wall s is the run alone (after imports; server/cluster/instance start is setup s), "
    "each repeat a fresh process, temp dir and database; RSS is the largest repeat's."
)


def _fmt(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def compare(
    flowlib_per_node: Mapping[tuple[str, int, str], float] | None,
    sizes: Iterable[int],
    repeat: int,
    *,
    peers: Iterable[str] = PEERS,
    shapes: Iterable[str] = SHAPES,
    venv: Path = DEFAULT_VENV,
    timeout_s: float = 120,
) -> list[dict[str, Any]]:
    """Install the peers if needed, measure them and print one row per peer, shape and size.

    flowlib_per_node maps (shape, n, executor) to flowlib's ms per node; each executor found
    there gets a column "x <executor>": the peer's ms per node divided by flowlib's (above 1:
    flowlib is faster). Sizes above a peer's max_n are skipped, and a run past timeout_s
    ends its cell. Returns the measurements, with an "error" entry for cells that failed.
    """
    flowlib_per_node = flowlib_per_node or {}
    venv = Path(venv)
    if not available(venv):
        print(f"installing the peers into {venv} ...", flush=True)
        start = time.perf_counter()
        ensure_venv(venv)
        print(f"installed in {time.perf_counter() - start:.0f} s, {venv_size_mb(venv):.0f} MB", flush=True)
    executors = sorted({executor for (_, _, executor) in flowlib_per_node})
    print(f"--- peers (benchmarks/peers), median of {repeat} ---")
    print(
        f"{'peer':<17} {'version':<9} {'shape':<8} {'nodes':>6} {'wall s':>8} {'ms/node':>8} "
        f"{'RSS MB':>7} {'setup s':>7}" + "".join(f" {'x ' + e:>8}" for e in executors),
        flush=True,
    )
    results: list[dict[str, Any]] = []
    for peer in peers:
        for shape in shapes:
            for n in sizes:
                if n > max_n(peer):
                    continue
                try:
                    cell = measure(peer, shape, n, repeat, venv=venv, timeout_s=timeout_s)
                except PeerError as exc:
                    cell = {"peer": peer, "shape": shape, "n": n, "error": exc.reason}
                    what = f"timed out (> {timeout_s:g} s a run)" if exc.timed_out else "failed"
                    print(f"{peer:<17} {'':<9} {shape:<8} {n:>6} {what}", flush=True)
                    if not exc.timed_out:
                        print(exc, file=sys.stderr)
                    results.append(cell)
                    continue
                ratios = []
                for executor in executors:
                    ours = flowlib_per_node.get((shape, n, executor))
                    ratios.append(cell["per_node_ms"] / ours if ours else None)
                print(
                    f"{peer:<17} {cell['version']:<9} {shape:<8} {n:>6} {_fmt(cell['wall_s'], 8, 2)} "
                    f"{_fmt(cell['per_node_ms'], 8, 3)} {_fmt(cell['peak_rss_mb'], 7, 0)} "
                    f"{_fmt(cell.get('setup_s'), 7, 2)}" + "".join(f" {_fmt(r, 8, 1)}" for r in ratios),
                    flush=True,
                )
                results.append(cell)
    print(NOTE, flush=True)
    return results
