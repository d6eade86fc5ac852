"""The smallest useful pipeline: numbers -> split -> two totals."""

from typing import NamedTuple

from flowlib import Resources, current, operator, workflow


class Split(NamedTuple):
    train: list[int]
    test: list[int]


@operator
def numbers(n: int) -> list[int]:
    return list(range(n))


@operator(retries=2, retry_delay=1.0, timeout=600, resources=Resources(cpus=1, memory="512MiB"), version="1")
def split(xs: list[int], frac: float = 0.8) -> Split:
    k = int(len(xs) * frac)
    return Split(xs[:k], xs[k:])


@operator
def total(xs: list[int]) -> int:
    current.log_metric("size", len(xs))
    current.logger.info("adding %d numbers", len(xs))
    return sum(xs)


@workflow
def hello(n: int = 10, frac: float = 0.8) -> int:
    s = split(numbers(n), frac=frac)
    return total(s.train)
