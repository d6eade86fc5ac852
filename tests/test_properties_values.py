"""Property tests (Hypothesis) for literal hashing (flowlib.hashing) and run plans (flowlib.plan,
flowlib.compile).

Hashing: two literals hash equal exactly when they are the same value of the same types, at any
depth (1, 1.0 and True are three values; -0.0 is not 0.0; every NaN is one value; dict and set order
do not count), and a digest is the same in every process, whatever its PYTHONHASHSEED.
Plans: a compiled plan of a generated workflow comes back from its JSON equal, and writes the same
JSON again.
"""

from __future__ import annotations

import enum
import json
import math
import os
import pickle
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

import numpy
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from literal_types import Box, Color, Point
from strategies import FAST, FEW, MANY, json_values, literals, small_atoms

from flowlib.compile import compile_dag
from flowlib.fingerprint import Fingerprinter
from flowlib.hashing import UnhashableLiteral, hash_labelled, literal_digest
from flowlib.loading import select_workflow
from flowlib.plan import Plan
from flowlib.workflows import Workflow

TESTS = Path(__file__).resolve().parent


def canon(value: Any) -> Any:
    """What the digest of `value` must tell apart, as a plain comparable structure."""
    kind = type(value)
    if kind is float:
        return ("float", value.hex())  # exact: the sign of zero counts; every NaN is 'nan'
    if kind in (int, bool, str, bytes, type(None)):
        return (kind.__name__, value)
    if kind is bytearray:
        return ("bytearray", bytes(value))
    if kind in (list, tuple):
        return (kind.__name__, tuple(map(canon, value)))
    if kind in (set, frozenset):
        return (kind.__name__, tuple(sorted(map(canon, value), key=repr)))
    if kind is dict:
        return ("dict", tuple(sorted(((canon(k), canon(v)) for k, v in value.items()), key=repr)))
    if isinstance(value, enum.Enum):
        return ("enum", kind.__qualname__, value.name)
    if kind in (Point, Box):
        return (kind.__qualname__, *(canon(getattr(value, f)) for f in kind.__annotations__))
    if isinstance(value, PurePath):
        return ("path", value.as_posix())
    raise AssertionError(f"no canonical form for {kind}")


def shuffled(value: Any, rnd: random.Random) -> Any:
    """An equal copy of `value` built in another order: dicts and sets filled afresh, shuffled."""
    kind = type(value)
    if kind in (list, tuple):
        return kind(shuffled(v, rnd) for v in value)
    if kind in (set, frozenset):
        items = [shuffled(v, rnd) for v in value]
        rnd.shuffle(items)
        return kind(items)
    if kind is dict:
        pairs = [(k, shuffled(v, rnd)) for k, v in value.items()]
        rnd.shuffle(pairs)
        return dict(pairs)
    return value


# -- literal hashing -------------------------------------------------------------------------------


@MANY
@given(literals(small_atoms), literals(small_atoms))
@example(1, 1.0)
@example(1, True)
@example(0.0, -0.0)
@example(math.nan, -math.nan)
@example({1: "a"}, {True: "a"})
@example([1, [2]], [[1], 2])
@example(("a", "b"), ("ab",))
@example(b"a", "a")
@example(b"a", bytearray(b"a"))
@example(Color.RED, 1)
@example(Point(1, 2), (1, 2))
def test_literals_hash_equal_exactly_when_they_are_the_same_value(a: Any, b: Any) -> None:
    assert (literal_digest(a) == literal_digest(b)) == (canon(a) == canon(b)), (a, b)


@MANY
@given(literals(), st.randoms(use_true_random=False))
def test_order_of_dicts_and_sets_does_not_count(value: Any, rnd: random.Random) -> None:
    again = shuffled(value, rnd)
    assert canon(again) == canon(value)
    assert literal_digest(again) == literal_digest(value)
    assert literal_digest(value) == hash_labelled(["literal", value])  # the fast path is the same bytes


@FAST
@given(
    hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)),
    hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)),
)
def test_arrays_hash_by_dtype_shape_and_bytes(a: numpy.ndarray, b: numpy.ndarray) -> None:
    same = a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert (literal_digest(a) == literal_digest(b)) == same
    assert literal_digest(a) == literal_digest(a.copy())
    if a.ndim == 0:  # a numpy scalar is not the array that holds it, nor a Python number
        assert literal_digest(a[()]) != literal_digest(a)
        if type(a.item()) in (bool, int, float):
            assert literal_digest(a[()]) != literal_digest(a.item())


_DIGESTS = """
import json, pickle, sys
sys.path.insert(0, sys.argv[2])
from flowlib.hashing import literal_digest
with open(sys.argv[1], "rb") as file:
    print(json.dumps([literal_digest(value) for value in pickle.load(file)]))
"""


@FEW
@given(st.lists(literals(), min_size=15, max_size=30))
def test_digests_are_the_same_in_other_processes_and_hash_seeds(
    tmp_path_factory: pytest.TempPathFactory, batch: list[Any]
) -> None:
    path = tmp_path_factory.mktemp("batch") / "values.pickle"
    path.write_bytes(pickle.dumps(batch))
    here = [literal_digest(value) for value in batch]
    for seed in ("0", "4242"):
        done = subprocess.run(
            [sys.executable, "-c", _DIGESTS, str(path), str(TESTS)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == here, f"PYTHONHASHSEED={seed}"


def test_a_literal_nested_too_deeply_is_an_unhashable_literal() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(UnhashableLiteral, match="nested too deeply"):
        literal_digest(deep)
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(UnhashableLiteral, match="nested too deeply"):
        hash_labelled(["literal", looped])


# -- plans ---------------------------------------------------------------------------------------------

PIPELINE = """
from typing import Any, NamedTuple

from flowlib import File, Resources, operator, workflow


class Pair(NamedTuple):
    low: int
    high: int


@operator
def source(seed: Any) -> int:
    return 1


@operator
def step(x: int, k: Any = None) -> int:
    return x


@operator
def join(xs: list[int], extra: dict[str, int]) -> int:
    return sum(xs) + sum(extra.values())


@operator
def spread(x: int) -> list[int]:
    return [x, x]


@operator
def pair(x: int) -> Pair:
    return Pair(x, x + 1)


@operator(cache=False, retries=2, retry_delay=0.5, timeout=30, version="2", resources=Resources(cpus=2, labels=("fast",)))
def tuned(x: int) -> int:
    return x


@workflow
def shaped(spec: Any = (), literals: Any = (), knobs: Any = None, data: bool = False) -> Any:
    lit = lambda j: literals[j % len(literals)] if literals else j
    ints = [source(File("data.txt") if data else lit(0))]
    lists = []
    pick = lambda j: ints[j % len(ints)]
    for op, a, b in spec:
        if op == "chain":
            ints.append(step(pick(a), lit(b)))
        elif op == "fan":
            ints.extend(step(pick(a), k=lit(j)) for j in range(b % 4 + 1))
        elif op == "diamond":
            top = pick(a)
            ints.append(join([step(top, 1), step(top, 2)], {"k": pick(b)}))
        elif op == "map_literal":
            lists.append(source.map([lit(j) for j in range(b % 3 + 1)]))
        elif op == "map_future":
            lists.append(step.map(spread(pick(a)), k=lit(b)))
        elif op == "gather" and lists:
            ints.append(join(lists[a % len(lists)], {str(lit(b)): pick(b)}))
        elif op == "pair":
            low, high = pair(pick(a))
            ints += [low, high]
        elif op == "tuned":
            ints.append(tuned(pick(a)))
    return {"last": ints[-1], "lists": lists[-2:], "pair": pair(pick(0)), "literal": lit(0)}
"""

shapes = st.lists(
    st.tuples(
        st.sampled_from(["chain", "fan", "diamond", "map_literal", "map_future", "gather", "pair", "tuned"]),
        st.integers(0, 20),
        st.integers(0, 20),
    ),
    max_size=10,
)


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workflow, Fingerprinter]]:
    root = tmp_path_factory.mktemp("plans")
    (root / "flow.toml").write_text("")
    (root / "data.txt").write_text("12345")
    (root / "props_plans.py").write_text(PIPELINE)
    path_before = list(sys.path)
    yield select_workflow(root / "props_plans.py"), Fingerprinter(root)
    sys.modules.pop("props_plans", None)
    sys.path[:] = path_before


@FAST
@given(
    shapes,
    st.lists(literals(), max_size=4),
    json_values | st.dictionaries(small_atoms, json_values),
    st.booleans(),
)
@example([], [], {1: "a"}, False)
@example([], [], {"k": [1, {None: math.nan}]}, False)
@example([("map_future", 0, 1), ("gather", 0, 0), ("pair", 1, 0)], [(1, 2), {1, 2}], None, True)
def test_a_plan_comes_back_from_its_json_equal(
    shaped: tuple[Workflow, Fingerprinter], spec: list, values: list, knobs: Any, data: bool
) -> None:
    wf, fingerprinter = shaped
    plan = compile_dag(
        wf.build(spec=spec, literals=values, knobs=knobs, data=data), fingerprinter=fingerprinter
    )
    text = plan.dumps()
    again = Plan.loads(text)
    assert again == plan
    assert again.dumps() == text
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    names = [node.name for node in plan.nodes]
    for position, node in enumerate(plan.nodes):  # build order is a topological order
        assert set(node.upstream()) <= set(names[:position]), node.name


def test_plan_parameters_are_kept_as_json_gives_them_back() -> None:
    plan = Plan("w", "p.py", "p", "/", {"a": {1: "x", None: [math.inf]}, "b": (1, 2), "c": {2, 1}}, {}, ())
    assert plan.params == {"a": {"1": "x", "null": ["inf"]}, "b": [1, 2], "c": "{1, 2}"}
    assert Plan.loads(plan.dumps()) == plan
