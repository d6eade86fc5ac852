"""A fan-out over a list known only at run time, cached per item.

    flow run examples/fanout/pipeline.py -p n=8
    flow run examples/fanout/pipeline.py -p n=12    # only items 8..11 run; 0..7 are cache hits

`score.map(candidates(n))` becomes one node per element (score[0], score[1], ...)
when `candidates` has run; each item is cached by its own element's digest.
"""

import time

from flowlib import current, operator, workflow


@operator
def candidates(n: int) -> list[int]:
    return [3 * i + 1 for i in range(n)]


@operator
def score(x: int, cost_s: float) -> float:
    time.sleep(cost_s)  # stands in for an expensive evaluation
    value = (x % 7) / 7 + x / 100
    current.log_metric("score", value)
    return value


@operator
def best(xs: list[int], scores: list[float]) -> int:
    return max(zip(scores, xs, strict=True))[1]


@workflow
def fanout(n: int = 8, cost_s: float = 0.2) -> int:
    xs = candidates(n)
    return best(xs, score.map(xs, cost_s=cost_s))
