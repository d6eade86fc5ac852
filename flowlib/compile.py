"""Compile a built DAG into a run plan: live operators become references with fingerprints.

This is where user code is still at hand (the CLI, `flowlib.run`, a compile subprocess);
everything after it works from the plan alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flowlib.dag import DAG, Container, Input, Literal, Node, Ref
from flowlib.files import File
from flowlib.fingerprint import Fingerprinter, find_project_root
from flowlib.futures import Future
from flowlib.operators import Operator, holds_future
from flowlib.plan import (
    RETURN,
    ContainerInput,
    LiteralInput,
    OperatorSpec,
    Plan,
    PlanInput,
    PlanNode,
    RefInput,
    b64,
)
from flowlib.serializers import _json_exact


def compile_dag(dag: DAG, *, fingerprinter: Fingerprinter | None = None) -> Plan:
    """The plan of a built workflow (see flowlib.plan)."""
    return _Compiler(dag, fingerprinter).plan()


def relative_to_root(path: str | Path, root: Path) -> str:
    """`path` relative to the project root when it lies inside it, else absolute."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)


def _plain(value: Any) -> bool:
    """A str or an ordinary int: JSON-exact without looking further."""
    kind = type(value)
    return kind is str or (kind is int and -(10**18) < value < 10**18)


def literal_input(value: Any, digest: str, root: Path) -> LiteralInput:
    if isinstance(value, File):
        return LiteralInput(digest, file=relative_to_root(value.path, root))
    try:
        exact = _json_exact(value)
    except RecursionError:
        exact = False
    if exact:
        return LiteralInput(digest, value)
    import cloudpickle

    return LiteralInput(digest, pickled=b64(cloudpickle.dumps(value)))


class _Compiler:
    def __init__(self, dag: DAG, fingerprinter: Fingerprinter | None) -> None:
        self.dag = dag
        self.root = find_project_root(dag.file)
        self.fingerprinter = fingerprinter or Fingerprinter(self.root)
        self.operators: dict[str, OperatorSpec] = {}
        self._op_ids: dict[int, str] = {}
        self._keep: list[Operator] = []  # the ids above stay theirs while compiling

    def plan(self) -> Plan:
        dag = self.dag
        folded = {name for node in dag.nodes.values() if node.kind == "map" for name in node.items or ()}
        nodes = [self.node(node) for node in dag.nodes.values() if node.name not in folded]
        nodes = self._mark_splits(nodes)
        return Plan(
            workflow=dag.workflow,
            file=relative_to_root(dag.file, self.root),
            module=dag.module,
            project_root=str(self.root),
            params=jsonable_params(dag.params),
            operators=self.operators,
            nodes=tuple(nodes),
            outputs=self.output_spec(dag.outputs) if dag.outputs is not None else None,
        )

    # -- nodes -------------------------------------------------------------------------------
    def node(self, node: Node) -> PlanNode:
        op = self.op_id(node.operator)
        if node.kind != "map":
            return PlanNode(node.name, op, self.inputs(node.inputs), node.call_site)
        if node.items is None:  # over a future's list, expanded at run time
            return PlanNode(
                node.name, op, self.inputs(node.inputs), node.call_site, kind="map", map_param=node.map_param
            )
        items = [self.dag.nodes[name] for name in node.items]
        fixed = {k: v for k, v in items[0].inputs.items() if k != node.map_param} if items else {}
        return PlanNode(
            node.name,
            op,
            self.inputs(fixed),
            node.call_site,
            kind="map",
            map_param=node.map_param,
            items=tuple(self.input(item.inputs[node.map_param]) for item in items),  # type: ignore[index]
        )

    def _mark_splits(self, nodes: list[PlanNode]) -> list[PlanNode]:
        """Mark each list output that a map expands over, so it is stored one artifact per element."""
        wanted: dict[str, set[str]] = {}
        kinds = {node.name: node.kind for node in nodes}
        for node in nodes:
            if node.kind == "map" and node.items is None:
                source = node.inputs[node.map_param]  # type: ignore[index]
                if isinstance(source, RefInput) and kinds.get(source.node) == "task":
                    wanted.setdefault(source.node, set()).add(source.output)
        return [
            PlanNode(
                n.name, n.op, n.inputs, n.site, n.kind, n.map_param, n.items, tuple(sorted(wanted[n.name]))
            )
            if n.name in wanted
            else n
            for n in nodes
        ]

    def inputs(self, inputs: dict[str, Input]) -> dict[str, PlanInput]:
        return {param: self.input(value) for param, value in inputs.items()}

    def input(self, value: Input) -> PlanInput:
        if type(value) is Literal and _plain(value.value):  # a big map's items: no checks each
            return LiteralInput(value.digest, value.value)
        if isinstance(value, Ref):
            return RefInput(value.node, value.output, value.index)
        if isinstance(value, Container):
            keys = None
            if value.keys is not None:
                from flowlib.hashing import literal_digest

                keys = tuple(literal_input(k, literal_digest(k), self.root) for k in value.keys)
            return ContainerInput(value.kind, tuple(self.input(item) for item in value.items), keys)
        assert isinstance(value, Literal)
        return literal_input(value.value, value.digest, self.root)

    # -- operators ---------------------------------------------------------------------------
    def op_id(self, op: Operator) -> str:
        found = self._op_ids.get(id(op))
        if found is not None:
            return found
        key = f"op{len(self.operators) + 1}"
        self._op_ids[id(op)] = key
        self._keep.append(op)
        fingerprint = self.fingerprinter.of(op.fn, version=op.version)
        fn = op.fn
        module = sys.modules.get(fn.__module__)
        file = getattr(module, "__file__", None) or fn.__code__.co_filename
        importable = fn.__module__ != "__main__" and "<locals>" not in op.qualname and _resolves(module, op)
        cls = op.output_class
        self.operators[key] = OperatorSpec(
            qualname=op.qualname,
            module=fn.__module__,
            file=relative_to_root(file, self.root),
            pickled=None if importable else _pickled(op),
            fingerprint=fingerprint.digest,
            fingerprint_parts=fingerprint.to_json(),
            fields=tuple(op.output_fields) if op.output_fields else None,
            cls=(cls.__module__, cls.__qualname__) if cls is not None else None,
            cache=op.cache,
            version=op.version,
            retries=op.retries,
            retry_delay=float(op.retry_delay),
            timeout=float(op.timeout) if op.timeout is not None else None,
            resources=op.resources,
            executor=op.executor,
            distributed=op.distributed,
        )
        return key

    # -- the workflow's outputs ---------------------------------------------------------------
    def output_spec(self, value: Any) -> Any:
        """The workflow's return structure as JSON: refs to node outputs inside containers."""
        if isinstance(value, Future):
            ref = value.ref
            spec: dict[str, Any] = {"ref": [ref.node, ref.output]}
            node = self.dag.nodes[ref.node]
            op = node.operator
            if ref.output == RETURN and op.output_fields:
                cls = op.output_class
                spec.update(
                    fields=list(op.output_fields), cls=[cls.__module__, cls.__qualname__] if cls else None
                )
                if node.kind == "map":
                    spec["zip"] = True  # a list of tuples, gathered one list per field
            return spec
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            cls = type(value)
            return {
                "nt": [cls.__module__, cls.__qualname__],
                "fields": {name: self.output_spec(getattr(value, name)) for name in value._fields},
            }
        if not holds_future(value):
            return self._literal_spec(value)
        if isinstance(value, dict):
            return {"dict": [[self._literal_spec(k), self.output_spec(v)] for k, v in value.items()]}
        return {type(value).__name__: [self.output_spec(item) for item in value]}

    def _literal_spec(self, value: Any) -> dict[str, Any]:
        shown = literal_input(value, "", self.root).to_json()
        shown.pop("d")
        return shown


def _pickled(op: Operator) -> str:
    import cloudpickle

    return b64(cloudpickle.dumps(op))


def _resolves(module: Any, op: Operator) -> bool:
    obj = module
    for part in op.qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return getattr(obj, "fn", None) is op.fn


def jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    """Workflow parameters as the run records them (paths and files as their text)."""
    from flowlib.results import jsonable

    return {
        key: str(value) if isinstance(value, (Path, File)) else jsonable(value)
        for key, value in params.items()
    }
