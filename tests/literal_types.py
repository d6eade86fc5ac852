"""Classes of the literals that the property tests generate, kept apart from Hypothesis so that a
subprocess unpickling them imports nothing heavy (tests/test_properties_values.py)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, NamedTuple


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


class Point(NamedTuple):
    x: int
    y: Any


@dataclasses.dataclass(frozen=True)
class Box:
    width: float
    label: str = ""
