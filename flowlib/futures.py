"""Futures: what an operator call returns while a workflow is being built."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NoReturn

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

    A NamedTuple output gives one attribute future per field (`split(xs).train`); a NamedTuple
    or `tuple[A, B]` output unpacks into one future per element (`a, b = op(x)`). A future has
    no value while the workflow is built: using it as one (formatting, comparing, hashing,
    truth tests, arithmetic) is a WorkflowDefinitionError; only passing it to an operator or
    returning it is allowed.
    """

    __slots__ = ("_fields", "_ref", "_type", "_unpacks")

    def __init__(
        self, ref: Ref, type_: Any, fields: dict[str, Any] | None = None, *, unpacks: bool | None = None
    ) -> None:
        self._ref = ref
        self._type = type_
        self._fields = fields
        self._unpacks = bool(fields) if unpacks is None else unpacks

    @property
    def ref(self) -> Ref:
        return self._ref

    @property
    def type(self) -> Any:
        return self._type

    def _field(self, name: str) -> Future:
        return Future(Ref(self._ref.node, name), self._fields[name])  # type: ignore[index]

    def __getattr__(self, name: str) -> Future:
        fields = object.__getattribute__(self, "_fields")
        if fields and name in fields and not name.isdigit():
            return self._field(name)
        if name.startswith("_"):  # no NamedTuple field starts with one; hasattr() probes (copy, IPython) do
            raise AttributeError(name)
        named = [f for f in fields or () if not f.isdigit()]
        known = f"; its outputs are {', '.join(named)}" if named else "; it is one value, not a NamedTuple"
        raise WorkflowDefinitionError(
            f"{_where()}the output of node '{self._ref.node}' has no field '{name}'{known}"
        )

    def __getitem__(self, index: Any) -> Future:
        if self._unpacks and isinstance(index, int) and not isinstance(index, bool):
            names = list(self._fields or ())
            if -len(names) <= index < len(names):
                return self._field(names[index])
        self._misuse(f"[{index!r}]")

    def __iter__(self):  # lets `train, test = split(xs)` unpack a NamedTuple or tuple output
        if not self._unpacks:
            raise WorkflowDefinitionError(
                f"{_where()}the output of node '{self._ref.node}' is one value while the workflow is built; "
                "only a NamedTuple or tuple[...] output unpacks (iterate inside an operator)"
            )
        return iter([self._field(name) for name in self._fields or ()])

    def __repr__(self) -> str:
        output = "" if self._ref.output == RETURN else f".{self._ref.output}"
        return f"Future({self._ref.node}{output})"

    def _misuse(self, use: str) -> NoReturn:
        raise WorkflowDefinitionError(
            f"{_where(3)}the output of node '{self._ref.node}' is used as a value ({use}) while the "
            "workflow is built, when it has none yet; move the expression into an operator that "
            "takes the output as a parameter"
        )

    # Everything that would need the value. `repr` stays (debuggers and error messages use it).
    def __str__(self) -> str:
        self._misuse("str()")

    def __format__(self, spec: str) -> str:
        self._misuse("formatting")

    def __bytes__(self) -> bytes:
        self._misuse("bytes()")

    def __bool__(self) -> bool:
        self._misuse("a truth test")

    def __len__(self) -> int:
        self._misuse("len()")

    def __contains__(self, item: Any) -> bool:
        self._misuse("'in'")

    def __hash__(self) -> int:
        self._misuse("hashing")

    def __index__(self) -> int:
        self._misuse("an index")

    def __int__(self) -> int:
        self._misuse("int()")

    def __float__(self) -> float:
        self._misuse("float()")

    def __round__(self, ndigits: Any = None) -> Any:
        self._misuse("round()")

    def __eq__(self, other: object) -> bool:  # type: ignore[override]
        self._misuse("==")

    def __ne__(self, other: object) -> bool:  # type: ignore[override]
        self._misuse("!=")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._misuse("a call")


def _misuse_operator(symbol: str) -> Any:
    def method(self: Future, *args: Any) -> Any:
        self._misuse(symbol)

    return method


_OPERATORS = {
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "neg": "unary -",
    "pos": "unary +",
    "abs": "abs()",
    "invert": "~",
}
for _name, _symbol in _OPERATORS.items():
    setattr(Future, f"__{_name}__", _misuse_operator(_symbol))
for _name, _symbol in {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "matmul": "@",
    "truediv": "/",
    "floordiv": "//",
    "mod": "%",
    "pow": "**",
    "lshift": "<<",
    "rshift": ">>",
    "and": "&",
    "or": "|",
    "xor": "^",
    "divmod": "divmod()",
}.items():
    for _prefix in ("", "r", "i"):
        if _name == "divmod" and _prefix == "i":
            continue
        setattr(Future, f"__{_prefix}{_name}__", _misuse_operator(_symbol))


def _where(depth: int = 2) -> str:
    """Return `file:line: workflow 'w': ` for the user's line that misused a future."""
    from flowlib.dag import active_builder, call_site

    frame = sys._getframe(depth)
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    builder = active_builder()
    workflow = f"workflow '{builder.workflow}': " if builder is not None else ""
    return f"{call_site(frame.f_code.co_filename, frame.f_lineno)}: {workflow}"
