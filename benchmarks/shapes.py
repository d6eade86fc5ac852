"""No-op pipelines of the benchmark shapes, written to a file and run with `flow run`."""

from __future__ import annotations

DIAMOND_WIDTH = 100

PIPELINES = {
    "fan-out": """
from flowlib import operator, workflow

@operator
def noop(i: int) -> int:
    return i

@workflow
def shape(n: int) -> list[int]:
    return noop.map(list(range(n)))
""",
    "chain": """
from flowlib import operator, workflow

@operator
def step(i: int) -> int:
    return i + 1

@workflow
def shape(n: int) -> int:
    value = 0
    for _ in range(n):
        value = step(value)
    return value
""",
    # Layers of WIDTH nodes; node j of a layer reads nodes j and j+1 of the layer before.
    "diamond": f"""
from flowlib import operator, workflow

WIDTH = {DIAMOND_WIDTH}

@operator
def seed(i: int) -> int:
    return i

@operator
def combine(a: int, b: int) -> int:
    return a + b

@workflow
def shape(n: int) -> int:
    layer = [seed(j) for j in range(WIDTH)]
    for _ in range(max(0, n // WIDTH - 1)):
        layer = [combine(layer[j], layer[(j + 1) % WIDTH]) for j in range(WIDTH)]
    return combine(layer[0], layer[1])
""",
}

# Both shapes in one file, as workflows `fan` and `chain` (the executor overhead scripts).
FAN_AND_CHAIN = """
from flowlib import operator, workflow

@operator
def noop(i: int) -> int:
    return i

@operator
def step(i: int) -> int:
    return i + 1

@workflow
def fan(n: int) -> list[int]:
    return noop.map(list(range(n)))

@workflow
def chain(n: int) -> int:
    value = 0
    for _ in range(n):
        value = step(value)
    return value
"""
