"""The DAG a workflow build produces, and the builder that names its nodes."""

from __future__ import annotations

import contextvars
import functools
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from flowlib.errors import WorkflowDefinitionError
from flowlib.futures import RETURN, Ref

if TYPE_CHECKING:
    import networkx

    from flowlib.operators import Operator


@dataclass(frozen=True, slots=True)
class Literal:
    """A plain value given to an operator, with the digest of its canonical encoding."""

    value: Any
    digest: str


@dataclass(frozen=True, slots=True)
class Container:
    """A list, tuple or dict (nested to any depth) holding futures: each future is an edge.

    `keys` are a dict's keys, in order, beside `items`; None for a list or tuple.
    """

    kind: str  # "list" | "tuple" | "dict"
    items: tuple[Input, ...]
    keys: tuple[Any, ...] | None = None


Input = Ref | Literal | Container


def input_refs(value: Input) -> list[Ref]:
    """The upstream refs an input holds (a container's, at any depth)."""
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, Container):
        return [ref for item in value.items for ref in input_refs(item)]
    return []


@dataclass(slots=True)
class Node:
    """One operator call in the DAG.

    kind "task" runs the operator once. kind "map" gathers the items of `operator.map`:
    `items` names item nodes known at build time; when it is None, the items are
    added at run time, one per element of the list in `inputs[map_param]`.
    """

    name: str
    operator: Operator
    inputs: dict[str, Input]
    call_site: str
    kind: str = "task"
    map_param: str | None = None
    items: list[str] | None = None

    def upstream(self) -> list[str]:
        names = []
        for value in self.inputs.values():
            if isinstance(value, Ref):
                names.append(value.node)
            elif isinstance(value, Container):
                names.extend(ref.node for ref in input_refs(value))
        if self.items:
            names.extend(self.items)
        return list(dict.fromkeys(names))


@dataclass
class DAG:
    """A built workflow: nodes by name in build order, the output spec, and the graph."""

    workflow: str
    file: str
    params: dict[str, Any]
    nodes: dict[str, Node] = field(default_factory=dict)
    module: str = ""  # the module the workflow's file was imported as
    outputs: Any = None

    @cached_property
    def graph(self) -> networkx.DiGraph:
        import networkx

        graph = networkx.DiGraph()
        graph.add_nodes_from(self.nodes)
        graph.add_edges_from((src, node.name) for node in self.nodes.values() for src in node.upstream())
        return graph

    def edges(self) -> list[tuple[str, str]]:
        return [(src, node.name) for node in self.nodes.values() for src in node.upstream()]

    def downstream(self) -> dict[str, list[str]]:
        """Map each node to the nodes that consume it."""
        users: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for src in node.upstream():
                users[src].append(node.name)
        return users

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "nodes": [
                {
                    "name": node.name,
                    "operator": node.operator.qualname,
                    "inputs": {param: input_json(value) for param, value in node.inputs.items()},
                    "resources": node.operator.resources.to_json(),
                    **({"kind": node.kind} if node.kind != "task" else {}),
                }
                for node in self.nodes.values()
            ],
            "edges": [list(edge) for edge in self.edges()],
        }


def input_json(value: Input) -> dict[str, Any]:
    """An input as `flow show --format json` writes it."""
    if isinstance(value, Ref):
        return value.to_json()
    if isinstance(value, Container):
        if value.kind == "dict":
            return {
                "dict": {str(k): input_json(v) for k, v in zip(value.keys or (), value.items, strict=True)}
            }
        return {value.kind: [input_json(item) for item in value.items]}
    return {"literal": value.value}


class Builder:
    """Collects nodes while a workflow function runs; gives them deterministic names."""

    def __init__(self, dag: DAG, workflow: str) -> None:
        self.dag = dag
        self.workflows = [workflow]
        self.prefix = ""
        self._counts: dict[str, int] = {}
        self._prefixes: set[str] = set()

    def unique(self, base: str, *, prefix: bool = False) -> str:
        """Return prefix+base, numbered `-2`, `-3` when that full name was used before.

        Sub-workflow prefixes are counted apart from node names.
        """
        full = self.prefix + base
        key = full + "/" if prefix else full
        taken = self._prefixes if prefix else self.dag.nodes
        count = self._counts.get(key, 0) + 1
        name = full if count == 1 else f"{full}-{count}"
        while name in taken:  # a `with_options(name="op-2")` may have claimed a numbered name
            count += 1
            name = f"{full}-{count}"
        self._counts[key] = count
        if prefix:
            self._prefixes.add(name)
        return name

    def add(self, node: Node) -> Node:
        if node.name in self.dag.nodes:
            raise WorkflowDefinitionError(
                f"{node.call_site}: workflow '{self.workflow}': two nodes are named '{node.name}'; "
                "give one another name with with_options(name=...)"
            )
        self.dag.nodes[node.name] = node
        return node

    @property
    def workflow(self) -> str:
        return self.workflows[-1]


_BUILDER: contextvars.ContextVar[Builder | None] = contextvars.ContextVar("flowlib_builder", default=None)


def active_builder() -> Builder | None:
    return _BUILDER.get()


def set_builder(builder: Builder | None) -> contextvars.Token:
    return _BUILDER.set(builder)


def reset_builder(token: contextvars.Token) -> None:
    _BUILDER.reset(token)


def call_site(filename: str, line: int) -> str:
    """Return `file:line`, the file relative to the working folder when it is inside it."""
    try:
        cwd = os.getcwd()
    except OSError:  # the working folder was removed
        return f"{filename}:{line}"
    return f"{_shown_path(filename, cwd)}:{line}"


@functools.lru_cache(maxsize=256)
def _shown_path(filename: str, cwd: str) -> str:
    # Cached: every operator call of a build asks, and relpath is the slowest step of a call.
    try:
        relative = os.path.relpath(filename, cwd)
    except ValueError:
        return filename
    return filename if relative.startswith("..") else relative


__all__ = ["DAG", "RETURN", "Builder", "Input", "Literal", "Node", "Ref"]
