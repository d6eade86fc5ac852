"""A layered (Sugiyama-style) layout of a DAG, top to bottom: layers by longest path, long
edges split by dummy points, crossings reduced by barycentre sweeps, then each node pulled
toward its neighbours without overlapping the others in its layer."""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass

BOX_W, BOX_H = 210.0, 52.0
DUMMY_W = 14.0
GAP_X, GAP_Y = 26.0, 46.0
MARGIN = 12.0
SWEEPS = 6
BIG = 3000  # vertices past which one ordering sweep must do


@dataclass
class Placed:
    x: list[float]  # box centres
    y: list[float]
    width: float
    height: float
    routes: list[list[tuple[float, float]]]  # per edge (in the order given): the points it passes


def layout(count: int, edges: list[tuple[int, int]]) -> Placed:
    """Place `count` boxes joined by `edges` (pairs of box indices, a DAG)."""
    if count == 0:
        return Placed([], [], 0.0, 0.0, [])
    layer = _layers(count, edges)
    # vertices 0..count-1 are the boxes; the rest are dummies on edges spanning several layers
    layer_of = list(layer)
    chains: list[list[int]] = []
    down: dict[int, list[int]] = defaultdict(list)
    up: dict[int, list[int]] = defaultdict(list)
    for src, dst in edges:
        chain = [src]
        for depth in range(layer[src] + 1, layer[dst]):
            layer_of.append(depth)
            chain.append(len(layer_of) - 1)
        chain.append(dst)
        chains.append(chain)
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)
    rows: list[list[int]] = [[] for _ in range(max(layer_of) + 1)]
    for vertex, depth in enumerate(layer_of):
        rows[depth].append(vertex)
    _order(rows, up, down)
    widths = [BOX_W if v < count else DUMMY_W for v in range(len(layer_of))]
    xs = _coordinates(rows, up, down, widths)
    left = min(xs[v] - widths[v] / 2 for v in range(len(xs)))
    xs = [x - left + MARGIN for x in xs]
    width = max(xs[v] + widths[v] / 2 for v in range(len(xs))) + MARGIN
    ys = [MARGIN + depth * (BOX_H + GAP_Y) + BOX_H / 2 for depth in layer_of]
    height = MARGIN * 2 + len(rows) * BOX_H + (len(rows) - 1) * GAP_Y
    routes = []
    for chain in chains:
        points = [(xs[chain[0]], ys[chain[0]] + BOX_H / 2)]
        points += [(xs[v], ys[v]) for v in chain[1:-1]]
        points.append((xs[chain[-1]], ys[chain[-1]] - BOX_H / 2))
        routes.append(points)
    return Placed(xs[:count], ys[:count], width, height, routes)


def _layers(count: int, edges: list[tuple[int, int]]) -> list[int]:
    """Longest path from a source, in topological order (Kahn)."""
    preds: dict[int, list[int]] = defaultdict(list)
    succs: dict[int, list[int]] = defaultdict(list)
    for src, dst in edges:
        preds[dst].append(src)
        succs[src].append(dst)
    waiting = [len(preds[v]) for v in range(count)]
    ready = [v for v in range(count) if waiting[v] == 0]
    layer = [0] * count
    while ready:
        vertex = ready.pop()
        for nxt in succs[vertex]:
            layer[nxt] = max(layer[nxt], layer[vertex] + 1)
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    return layer


def _order(rows: list[list[int]], up: dict[int, list[int]], down: dict[int, list[int]]) -> None:
    """Reorder each layer in place by the barycentre of its neighbours; keep the best sweep."""
    best = [list(row) for row in rows]
    best_crossings = _crossings(rows, down)
    sweeps = SWEEPS if sum(len(row) for row in rows) <= BIG else 1
    for sweep in range(sweeps):
        downward = sweep % 2 == 0
        span = range(1, len(rows)) if downward else range(len(rows) - 2, -1, -1)
        for depth in span:
            fixed = rows[depth - 1] if downward else rows[depth + 1]
            where = {v: i for i, v in enumerate(fixed)}
            links = up if downward else down
            current = {v: i for i, v in enumerate(rows[depth])}

            def centre(
                v: int, where: dict[int, int] = where, links: dict = links, current: dict = current
            ) -> float:
                found = [where[n] for n in links.get(v, ()) if n in where]
                return sum(found) / len(found) if found else float(current[v])

            rows[depth].sort(key=centre)
        crossings = _crossings(rows, down)
        if crossings < best_crossings:
            best, best_crossings = [list(row) for row in rows], crossings
        if best_crossings == 0:
            break
    rows[:] = best


def _crossings(rows: list[list[int]], down: dict[int, list[int]]) -> int:
    """Edge crossings between consecutive layers (inversions of the lower ends, by upper order)."""
    total = 0
    for upper, lower in itertools.pairwise(rows):
        where = {v: i for i, v in enumerate(lower)}
        ends = [where[n] for v in upper for n in sorted(down.get(v, ()), key=where.get) if n in where]
        seen: list[int] = []
        for end in reversed(ends):  # count, for each end, the ends right of it that are smaller
            position = bisect_left(seen, end)
            total += position
            seen.insert(position, end)
    return total


def _coordinates(
    rows: list[list[int]], up: dict[int, list[int]], down: dict[int, list[int]], widths: list[float]
) -> list[float]:
    """x of each vertex: packed left to right, then pulled toward the mean of its neighbours."""
    xs = [0.0] * len(widths)
    for row in rows:
        at = 0.0
        for v in row:
            xs[v] = at + widths[v] / 2
            at += widths[v] + GAP_X
    widest = max(sum(widths[v] + GAP_X for v in row) for row in rows)
    for row in rows:  # centre each layer under the widest
        used = sum(widths[v] + GAP_X for v in row)
        for v in row:
            xs[v] += (widest - used) / 2
    for sweep in range(4):
        order = rows if sweep % 2 == 0 else rows[::-1]
        links = up if sweep % 2 == 0 else down
        for row in order:
            wanted = []
            for v in row:
                near = [xs[n] for n in links.get(v, ())]
                wanted.append(sum(near) / len(near) if near else xs[v])
            _settle(row, wanted, widths, xs)
    return xs


def _settle(row: list[int], wanted: list[float], widths: list[float], xs: list[float]) -> None:
    """Put the row's vertices as near their wanted x as their order and spacing allow."""
    rightward, leftward = list(wanted), list(wanted)
    for i in range(1, len(row)):  # push right what overlaps its left neighbour
        gap = (widths[row[i - 1]] + widths[row[i]]) / 2 + GAP_X
        rightward[i] = max(rightward[i], rightward[i - 1] + gap)
    for i in range(len(row) - 2, -1, -1):  # or push left what overlaps its right neighbour
        gap = (widths[row[i]] + widths[row[i + 1]]) / 2 + GAP_X
        leftward[i] = min(leftward[i], leftward[i + 1] - gap)
    for v, a, b in zip(
        row, rightward, leftward, strict=True
    ):  # both keep the spacing, so their mean does too
        xs[v] = (a + b) / 2
