"""Hypothesis settings and strategies shared by the property tests (tests/test_properties*.py)."""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from literal_types import Box, Color, Point

# Sized so that the whole property suite stays well under a minute on two cores.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # cheap ones
FEW = settings(  # each example starts subprocesses: few examples, each a batch of values
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

# Text a command line or a TOML file can carry: any character but a lone surrogate.
words = st.text(st.characters(exclude_categories=("Cs",)))
json_floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | json_floats | words,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(words, inner, max_size=4),
    max_leaves=8,
)


# -- literals: every kind flowlib.hashing encodes -----------------------------------------------------


# Few distinct atoms, so that independently drawn values are often equal (1, 1.0, True, 0.0, -0.0...).
small_atoms = (
    st.sampled_from([0, 1, -1, 2**64])
    | st.sampled_from([0.0, -0.0, 1.0, 0.5, math.inf, math.nan])
    | st.booleans()
    | st.none()
    | st.sampled_from(["", "a", "1", "é", "\x00"])
    | st.sampled_from([b"", b"a", b"1"])
)
atoms = small_atoms | st.integers() | st.floats() | words | st.binary(max_size=8)
structured = (
    st.sampled_from(list(Color))
    | st.builds(Point, st.integers(-2, 2), small_atoms)
    | st.builds(Box, st.sampled_from([0.0, 1.0, 2.5]), st.sampled_from(["", "a"]))
    | st.sampled_from(["a", "a/b", "/x/y"]).map(PurePosixPath)
    | st.binary(max_size=4).map(bytearray)
)
keys = small_atoms.filter(lambda k: not (isinstance(k, float) and math.isnan(k))) | st.sampled_from(
    list(Color)
)


def literals(leaves: st.SearchStrategy[Any] = atoms | structured) -> st.SearchStrategy[Any]:
    """Nested literals: lists, tuples, dicts, sets and frozensets of `leaves`."""
    hashable = leaves.filter(_is_hashable)
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.lists(inner, max_size=3).map(tuple)
            | st.dictionaries(keys, inner, max_size=3)
            | st.sets(hashable, max_size=3)
            | st.frozensets(hashable, max_size=3)
        ),
        max_leaves=10,
    )


def _is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
