"""Futures: what an operator call returns while a workflow is being built."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from flowlib.errors import WorkflowDefinitionError

RETURN = "return"  # the name of an operator's single (or whole) output


@dataclass(frozen=True, slots=True)
class Ref:
    """Points at one output of a node; `index` picks one element of a list output."""

    node: str
    output: str = RETURN
    index: int | None = None

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"node": self.node, "output": self.output}
        if self.index is not None:
            shown["index"] = self.index
        return shown


class Future:
    """The promise of a node's output; typed by the operator's return annotation.

    A NamedTuple output gives one attribute future per field (`split(xs).train`).
    """

    __slots__ = ("_fields", "_ref", "_type")

    def __init__(self, ref: Ref, type_: Any, fields: dict[str, Any] | None = None) -> None:
        self._ref = ref
        self._type = type_
        self._fields = fields

    @property
    def ref(self) -> Ref:
        return self._ref

    @property
    def type(self) -> Any:
        return self._type

    def __getattr__(self, name: str) -> Future:
        fields = object.__getattribute__(self, "_fields")
        if fields and name in fields:
            return Future(Ref(self._ref.node, name), fields[name])
        if name.startswith("_"):  # no NamedTuple field starts with one; hasattr() probes (copy, IPython) do
            raise AttributeError(name)
        known = f"; its outputs are {', '.join(fields)}" if fields else "; it is one value, not a NamedTuple"
        raise WorkflowDefinitionError(
            f"{_where()}the output of node '{self._ref.node}' has no field '{name}'{known}"
        )

    def __iter__(self):  # lets `train, test = split(xs)` unpack a NamedTuple output
        if not self._fields:
            raise WorkflowDefinitionError(
                f"{_where()}the output of node '{self._ref.node}' is one value; only a NamedTuple output unpacks"
            )
        return iter([getattr(self, name) for name in self._fields])

    def __bool__(self) -> bool:
        raise WorkflowDefinitionError(
            f"{_where()}the output of node '{self._ref.node}' has no value while the workflow is built; "
            "branch inside an operator instead"
        )

    def __repr__(self) -> str:
        output = "" if self._ref.output == RETURN else f".{self._ref.output}"
        return f"Future({self._ref.node}{output})"


def _where() -> str:
    """Return `file:line: workflow 'w': ` for the user's line that misused a future (frame 2 up)."""
    from flowlib.dag import active_builder, call_site

    frame = sys._getframe(2)
    builder = active_builder()
    workflow = f"workflow '{builder.workflow}': " if builder is not None else ""
    return f"{call_site(frame.f_code.co_filename, frame.f_lineno)}: {workflow}"
