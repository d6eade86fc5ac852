"""Build-time type checks: upstream futures and literals against parameter annotations."""

from __future__ import annotations

import json

import pytest

from flowlib import FlowTypeError

HEADER = """
import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional, Union

import numpy
import torch

from flowlib import operator, workflow


class Pair(NamedTuple):
    left: int
    right: str


class Other(NamedTuple):
    left: int
    right: str


@dataclasses.dataclass
class Config:
    lr: float


@dataclasses.dataclass
class BigConfig(Config):
    layers: int = 2


@dataclasses.dataclass
class Unrelated:
    lr: float
"""

FUTURE = (
    HEADER
    + """

@operator
def produce() -> {produced}:
    raise NotImplementedError


@operator
def consume(x: {expected}) -> int:
    return 0


@workflow
def check() -> int:
    return consume(produce())  # the call
"""
)

LITERAL = (
    HEADER
    + """

@operator
def consume(x: {expected}) -> int:
    return 0


@workflow
def check() -> int:
    return consume({literal})  # the call
"""
)

FITS = [
    ("int", "int"),
    ("int", "float"),  # the numeric tower
    ("bool", "int"),
    ("list[int]", "list[float]"),
    ("list[int]", "list"),
    ("list", "list[int]"),  # an unknown item type is not a wrong one
    ("list[int]", "Sequence[float]"),
    ("dict[str, int]", "dict[str, float]"),
    ("tuple[int, str]", "tuple[int, str]"),
    ("tuple[int, ...]", "tuple[float, ...]"),
    ("int", "Optional[int]"),
    ("None", "Optional[int]"),
    ("int", "Union[int, str]"),
    ("int | None", "float | None"),
    ("Union[int, str]", "Union[str, int, None]"),
    ("Pair", "Pair"),
    ("Pair", "tuple"),
    ("list[Pair]", "list[tuple]"),
    ("Config", "Config"),
    ("BigConfig", "Config"),
    ("Any", "int"),
    ("int", "Any"),
    ("Any", "torch.Tensor"),
    ("torch.Tensor", "torch.Tensor"),
    ("numpy.ndarray", "numpy.ndarray"),
    ("dict[str, torch.Tensor]", "dict[str, torch.Tensor]"),
]

MISFITS = [
    ("str", "int"),
    ("float", "int"),
    ("list[float]", "list[int]"),
    ("list[str]", "list[int]"),
    ("list[int]", "dict[str, int]"),
    ("dict[str, int]", "dict[int, int]"),
    ("tuple[int, str]", "tuple[str, int]"),
    ("Optional[int]", "int"),
    ("Union[int, str]", "int"),
    ("str", "Union[int, float]"),
    ("Pair", "Other"),
    ("Pair", "int"),
    ("Config", "BigConfig"),
    ("Config", "Unrelated"),
    ("torch.Tensor", "numpy.ndarray"),
    ("numpy.ndarray", "torch.Tensor"),
    ("str", "list[str]"),
]


@pytest.mark.parametrize(("produced", "expected"), FITS)
def test_an_upstream_future_that_fits_builds(project, produced, expected) -> None:  # type: ignore[no-untyped-def]
    project.write("pipeline.py", FUTURE.format(produced=produced, expected=expected))
    dag = project.load("pipeline.py").check.build()
    assert list(dag.nodes) == ["produce", "consume"]


@pytest.mark.parametrize(("produced", "expected"), MISFITS)
def test_an_upstream_future_that_does_not_fit_is_a_flow_type_error(project, produced, expected) -> None:  # type: ignore[no-untyped-def]
    project.write("pipeline.py", FUTURE.format(produced=produced, expected=expected))
    with pytest.raises(FlowTypeError) as info:
        project.load("pipeline.py").check.build()
    message = str(info.value)
    assert f"pipeline.py:{project.line('pipeline.py', '# the call')}" in message
    assert "workflow 'check'" in message and "operator 'consume'" in message and "parameter 'x'" in message
    assert "expected " in message and "output of 'produce'" in message


LITERAL_FITS = [
    ("3", "int"),
    ("3", "float"),
    ("2.5", "float"),
    ("True", "bool"),
    ("'a'", "str"),
    ("[1, 2]", "list[float]"),
    ("[1, 2.5]", "list[float]"),
    ("[]", "list[int]"),
    ("{'a': 1}", "dict[str, float]"),
    ("(1, 'a')", "tuple[int, str]"),
    ("(1, 2, 3)", "tuple[int, ...]"),
    ("None", "Optional[int]"),
    ("4", "Optional[int]"),
    ("'a'", "Union[int, str]"),
    ("[[1], [2, 3]]", "list[list[int]]"),
    ("Pair(1, 'a')", "Pair"),
    ("Config(0.1)", "Config"),
    ("BigConfig(0.1)", "Config"),
    ("Config(0.1)", "Any"),
    ("numpy.zeros(3)", "numpy.ndarray"),
    ("torch.zeros(3)", "torch.Tensor"),
]

LITERAL_MISFITS = [
    ("'3'", "int"),
    ("2.5", "int"),
    ("None", "int"),
    ("[1, 'a']", "list[int]"),
    ("[1] * 200 + ['a']", "list[int]"),  # a bad item deep in a long list
    ("[[1], [2, 'x']]", "list[list[int]]"),
    ("{'a': 1, 'b': 'x', 'c': 3}", "dict[str, int]"),
    ("(1, 2, 'x')", "tuple[int, ...]"),
    ("(1, 'a', 2)", "tuple[int, str]"),
    ("[1, 'a']", "Optional[list[int]]"),
    ("3.5", "Optional[int]"),
    ("Config(0.1)", "BigConfig"),
    ("Unrelated(0.1)", "Config"),
    ("(1, 'a')", "Pair"),
    ("numpy.zeros(3)", "torch.Tensor"),
    ("[1, 2]", "numpy.ndarray"),
]


@pytest.mark.parametrize(("literal", "expected"), LITERAL_FITS)
def test_a_literal_that_fits_builds(project, literal, expected) -> None:  # type: ignore[no-untyped-def]
    project.write("pipeline.py", LITERAL.format(literal=literal, expected=expected))
    dag = project.load("pipeline.py").check.build()
    assert list(dag.nodes) == ["consume"]


@pytest.mark.parametrize(("literal", "expected"), LITERAL_MISFITS)
def test_a_literal_that_does_not_fit_is_refused_every_time(project, literal, expected) -> None:  # type: ignore[no-untyped-def]
    project.write("pipeline.py", LITERAL.format(literal=literal, expected=expected))
    pipe = project.load("pipeline.py")
    for _ in range(10):  # a checker that samples one item of a container would pass some of these builds
        with pytest.raises(FlowTypeError) as info:
            pipe.check.build()
    message = str(info.value)
    assert f"pipeline.py:{project.line('pipeline.py', '# the call')}" in message
    assert "workflow 'check'" in message and "operator 'consume'" in message and "parameter 'x'" in message


def test_the_message_names_site_workflow_operator_parameter_expected_and_actual(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from typing import NamedTuple
        from flowlib import operator, workflow

        class Split(NamedTuple):
            train: list[int]
            test: list[int]

        @operator
        def split(n: int) -> Split:
            return Split([], [])

        @operator
        def train(lr: float, rows: list[int]) -> float:
            return lr

        @workflow
        def fit(n: int = 3) -> float:
            s = split(n)
            return train(0.1, s)  # whole tuple
        """,
    )
    line = project.line("pipeline.py", "# whole tuple")
    with pytest.raises(FlowTypeError) as info:
        project.load("pipeline.py").fit.build()
    message = str(info.value)
    assert message.startswith(f"pipeline.py:{line}: ")
    for part in ("workflow 'fit'", "operator 'train'", "parameter 'rows'", "expected list[int]", "got Split"):
        assert part in message, message
    assert isinstance(info.value, TypeError)  # FlowTypeError is also a TypeError
    project.fails(
        "show", "pipeline.py", expect=[f"pipeline.py:{line}", "parameter 'rows'", "expected list[int]"]
    )


def test_a_namedtuple_field_future_has_the_field_type(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from typing import NamedTuple
        from flowlib import operator, workflow

        class Split(NamedTuple):
            train: list[int]
            name: str

        @operator
        def split(n: int) -> Split:
            return Split([], "")

        @operator
        def shout(text: str) -> str:
            return text

        @workflow
        def ok() -> str:
            return shout(split(1).name)

        @workflow
        def wrong() -> str:
            return shout(split(1).train)
        """,
    )
    pipe = project.load("pipeline.py")
    assert list(pipe.ok.build().nodes) == ["split", "shout"]
    with pytest.raises(FlowTypeError, match=r"expected str, got list\[int\] \(output of 'split'\)"):
        pipe.wrong.build()


def test_a_type_error_in_flow_run_stops_before_anything_runs(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        import pathlib
        from flowlib import operator, workflow

        @operator
        def touch(n: int) -> str:
            pathlib.Path("touched").write_text("ran")
            return "x"

        @operator
        def double(x: int) -> int:
            return 2 * x

        @workflow
        def w() -> int:
            return double(touch(1))  # mismatch
        """,
    )
    line = project.line("pipeline.py", "# mismatch")
    project.fails(
        "run", "pipeline.py", expect=[f"pipeline.py:{line}", "operator 'double'", "expected int, got str"]
    )
    assert not (project.root / "touched").exists()


def test_torch_and_numpy_annotations_build_between_operators(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        import numpy as np
        import torch
        from flowlib import operator, workflow

        @operator
        def make(n: int) -> torch.Tensor:
            return torch.zeros(n)

        @operator
        def scale(t: torch.Tensor, by: float) -> torch.Tensor:
            return t * by

        @operator
        def to_numpy(t: torch.Tensor) -> np.ndarray:
            return t.numpy()

        @operator
        def mean(a: np.ndarray) -> float:
            return float(a.mean())

        @workflow
        def tensors(n: int = 4) -> float:
            return mean(to_numpy(scale(make(n), 2)))
        """,
    )
    dag = project.load("pipeline.py").tensors.build()
    assert list(dag.nodes) == ["make", "scale", "to_numpy", "mean"]
    shown = project.flow("show", "pipeline.py", "--format", "json")
    assert shown.code == 0, str(shown)
    assert [node["name"] for node in shown.json()["nodes"]] == ["make", "scale", "to_numpy", "mean"]


def test_flowlib_never_imports_torch_or_numpy_itself(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def total(xs: list[int]) -> int:
            return sum(xs)

        @workflow
        def w(n: int = 3) -> int:
            return total(list(range(n)))
        """,
    )
    done = project.python(
        """
        import json, sys
        import flowlib
        after_import = sorted(m for m in ("torch", "numpy") if m in sys.modules)
        from flowlib.loading import select_workflow
        dag = select_workflow("pipeline.py").build(n=5)
        dag.graph
        after_build = sorted(m for m in ("torch", "numpy") if m in sys.modules)
        print(json.dumps([after_import, after_build, len(dag.nodes)]))
        """
    )
    assert done.code == 0, str(done)
    assert json.loads(done.out) == [[], [], 1]
