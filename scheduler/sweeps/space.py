"""A sweep's search space: `--space NAME=SPEC` read, checked against the workflow's parameters, and
turned into Optuna distributions (typed by the parameters' annotations, so Optuna hands back values
of the right type and readers of the study need no user code).

SPEC is `int(lo,hi)`, `float(lo,hi)`, `loguniform(lo,hi)` or `choice(a,b,...)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flowlib import typecheck
from flowlib.errors import FlowError, ParameterError
from flowlib.params import _hint, convert
from flowlib.typecheck import wants_float
from flowlib.workflows import Workflow

KINDS = ("int", "float", "loguniform", "choice")
GRID_LIMIT = 100_000  # points a grid sweep may have (the sampler lists them all)
_SPEC = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$", re.DOTALL)


class SweepError(FlowError):
    """A sweep is defined wrongly (space, objective, settings), or cannot be run or continued."""


@dataclass(frozen=True)
class Dimension:
    """One tuned parameter: its kind, bounds or choices, and whether the workflow wants floats."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()
    floats: bool = False  # an int(lo,hi) range for a float parameter: whole numbers, given as floats

    @property
    def spec(self) -> str:
        """The canonical SPEC text (what the sweep records)."""
        if self.kind == "choice":
            return f"choice({','.join(_shown(c) for c in self.choices)})"
        return f"{self.kind}({_shown(self.low)},{_shown(self.high)})"

    def distribution(self) -> Any:
        from optuna import distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(self.choices)
        if self.kind == "int" and not self.floats:
            return d.IntDistribution(int(self.low), int(self.high))  # type: ignore[arg-type]
        if self.kind == "int":
            return d.FloatDistribution(float(self.low), float(self.high), step=1.0)  # type: ignore[arg-type]
        return d.FloatDistribution(float(self.low), float(self.high), log=self.kind == "loguniform")  # type: ignore[arg-type]

    def grid(self) -> list[Any]:
        """The values a grid sweep tries."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            values = range(int(self.low), int(self.high) + 1)  # type: ignore[arg-type]
            return [float(v) for v in values] if self.floats else list(values)
        raise SweepError(
            f"--sampler grid: parameter '{self.name}' is {self.spec}, which has no grid; "
            "give it as int(lo,hi) or choice(a,b,...)"
        )

    def probes(self) -> tuple[Any, Any]:
        """Two different values (where it has two), to tell which steps depend on this parameter."""
        if self.kind == "choice":
            return self.choices[0], self.choices[-1]
        cast = float if self.floats or self.kind != "int" else int
        return cast(self.low), cast(self.high)


def _shown(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "none"
    return repr(value) if isinstance(value, str) else str(value)


def split_space(items: Iterable[str]) -> dict[str, str]:
    """["lr=loguniform(1e-4,1e-1)", ...] -> {"lr": "loguniform(1e-4,1e-1)"}; a name given twice is an error."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SweepError(f"--space {item!r}: expected NAME=SPEC, e.g. --space lr=loguniform(1e-4,1e-1)")
        if name in found:
            raise SweepError(f"--space {name} is given twice ({found[name]!r} and {spec!r}); give it once")
        found[name] = spec
    return found


def parse_space(
    wf: Workflow, space: Mapping[str, Any], fixed: Mapping[str, Any] | None = None
) -> dict[str, Dimension]:
    """The dimensions of `space` (name -> SPEC text, or a list of choices) for workflow `wf`."""
    if not space:
        raise SweepError("a sweep needs a search space: give --space NAME=SPEC at least once")
    parameters = wf.parameters()
    dims = {}
    for name, spec in space.items():
        if name not in parameters:
            valid = ", ".join(parameters) or "none"
            raise SweepError(
                f"--space {name}: workflow '{wf.name}' has no parameter '{name}'; its parameters: {valid}"
            )
        if name in (fixed or {}):
            raise SweepError(f"parameter '{name}' is given both as -p and as --space; give it once")
        dims[name] = _dimension(wf, name, spec)
    return dims


def _dimension(wf: Workflow, name: str, spec: Any) -> Dimension:
    if isinstance(spec, (list, tuple)):
        spec = f"choice({','.join(str(item) for item in spec)})"
    where = f"--space {name}={spec}"
    match = _SPEC.match(str(spec))
    if match is None or match.group(1) not in KINDS:
        raise SweepError(f"{where}: expected int(lo,hi), float(lo,hi), loguniform(lo,hi) or choice(a,b,...)")
    kind, body = match.group(1), match.group(2)
    items = [item.strip() for item in body.split(",")]
    if any(not item for item in items):
        raise SweepError(f"{where}: an empty value between commas")
    hint = _hint(wf, name)
    if kind == "choice":
        return _choice(wf, name, items, where)
    if len(items) != 2:
        raise SweepError(f"{where}: {kind}(lo,hi) takes two numbers, got {len(items)}")
    try:
        low, high = (int(item) for item in items) if kind == "int" else (float(item) for item in items)
    except ValueError:
        raise SweepError(
            f"{where}: the bounds of {kind}(lo,hi) must be {'whole ' if kind == 'int' else ''}numbers"
        ) from None
    if not low < high:
        raise SweepError(f"{where}: lo must be below hi")
    if kind == "loguniform" and low <= 0:
        raise SweepError(f"{where}: loguniform needs lo above 0")
    if kind == "int" and typecheck.is_instance(1, hint):
        return Dimension(name, kind, low, high, floats=wants_float(hint))
    if kind != "int" and typecheck.is_instance(0.5, hint):
        return Dimension(name, kind, low, high)
    wanted = "int(lo,hi) or choice(...)" if typecheck.is_instance(1, hint) else "choice(...)"
    raise SweepError(
        f"{where}: parameter '{name}' of workflow '{wf.name}' is {typecheck.describe(hint)}; use {wanted}"
    )


def _choice(wf: Workflow, name: str, items: list[str], where: str) -> Dimension:
    values = []
    for item in items:
        text = item[1:-1] if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"" else item
        try:
            value = convert(wf, name, text)
        except ParameterError as exc:
            raise SweepError(f"{where}: {exc}") from None
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise SweepError(
                f"{where}: a choice must be a number, a string or a boolean (got {typecheck.describe_value(value)})"
            )
        if any(type(value) is type(v) and value == v for v in values):
            raise SweepError(f"{where}: {item} is listed twice")
        values.append(value)
    return Dimension(name, "choice", choices=tuple(values))


def grid_space(dims: Mapping[str, Dimension]) -> dict[str, list[Any]]:
    """Every dimension's grid values (for Optuna's GridSampler); too large a grid is an error."""
    grid = {name: dim.grid() for name, dim in dims.items()}
    size = 1
    for values in grid.values():
        size *= len(values)
    if size > GRID_LIMIT:
        raise SweepError(f"--sampler grid: the grid has {size:,} points (at most {GRID_LIMIT:,})")
    return grid


def grid_size(dims: Mapping[str, Dimension]) -> int:
    size = 1
    for values in grid_space(dims).values():
        size *= len(values)
    return size
