"""Trials' plans (the workflow built with the fixed and the tuned parameters), the steps every
trial shares, and a finished trial's objective value."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine

from flowlib.compile import compile_dag
from flowlib.errors import FlowError, WorkflowDefinitionError
from flowlib.fingerprint import Fingerprinter, find_project_root
from flowlib.loading import innermost_site, one_line
from flowlib.plan import Plan, PlanNode
from flowlib.workflows import Workflow
from scheduler.sweeps.space import Dimension


class ObjectiveMissing(FlowError):
    """A trial's run succeeded but holds no usable objective value."""


class TrialPlans:
    """Plans of one sweep's trials: `wf` built with the fixed and the tuned parameters.

    One fingerprinter serves every trial of the sweep (a fresh one per compile would look up
    every installed package again for each trial): the trials of a sweep run one version of the
    code, so that their results compare like with like.
    """

    def __init__(self, wf: Workflow, fixed: Mapping[str, Any]) -> None:
        self.wf, self.fixed = wf, dict(fixed)
        self.fingerprinter = Fingerprinter(find_project_root(wf.file))

    def plan(self, tuned: Mapping[str, Any]) -> Plan:
        """The plan of one trial; an error while building is one line naming the pipeline's file:line."""
        wf = self.wf
        try:
            dag = wf.build(**self.fixed, **tuned)
        except FlowError:
            raise
        except Exception as exc:
            raise WorkflowDefinitionError(
                f"{innermost_site(exc, wf.file)}: workflow '{wf.name}' raised while building its DAG: {one_line(exc)}"
            ) from None
        return compile_dag(dag, fingerprinter=self.fingerprinter)

    def probes(self, dims: Mapping[str, Dimension]) -> tuple[Plan, Plan]:
        """The plans at two corners of the space (every tuned parameter at its first, then its last
        value): building them checks the sweep before anything runs; comparing them finds the
        shared steps."""
        first = {name: dim.probes()[0] for name, dim in dims.items()}
        last = {name: dim.probes()[1] for name, dim in dims.items()}
        shown = ", ".join(f"{name}={value!r}" for name, value in first.items())
        try:
            return self.plan(first), self.plan(last)
        except FlowError as exc:
            raise type(exc)(f"{exc} (building the sweep's first point, {shown})") from None


def shared_nodes(a: Plan, b: Plan) -> set[str]:
    """Nodes that are the same computation in both plans (same code, same literals, shared
    upstream): they do not depend on a tuned parameter, so every trial shares their cache entries."""
    theirs = {node.name: node for node in b.nodes}
    shared: set[str] = set()
    for node in a.nodes:  # build order is a topological order
        other = theirs.get(node.name)
        if other is None or any(up not in shared for up in node.upstream()):
            continue
        if _identity(node, a) == _identity(other, b):
            shared.add(node.name)
    return shared


def _identity(node: PlanNode, plan: Plan) -> str:
    shown = node.to_json()
    shown["op"] = plan.operators[node.op].fingerprint
    shown.pop("site", None)
    return json.dumps(_digests_only(shown), sort_keys=True)


def _digests_only(value: Any) -> Any:
    """A literal input compares by its digest (a pickled literal's bytes may differ between builds)."""
    if isinstance(value, dict):
        if "d" in value:
            return {"d": value["d"]}
        return {key: _digests_only(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_digests_only(item) for item in value]
    return value


def objective_value(engine: Engine, reader: Any, run_id: str, key: str) -> float:
    """The objective of a succeeded run: the field `key` of its output, else the last value of
    the metric `key` it logged (a cached node's: those of the run that computed it)."""
    from scheduler.store import repository as repo
    from scheduler.store.logs import node_metrics
    from scheduler.store.readback import load_run

    def metrics() -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return node_metrics(conn, repo.require_run(conn, run_id))

    result = load_run(engine, reader, run_id, with_nodes=False, classes=False)
    return pick_objective(result.outputs_json(), metrics, key)


def pick_objective(outputs: Any, metrics: Callable[[], list[dict[str, Any]]], key: str) -> float:
    """The objective from a run's outputs (as JSON), else from its metrics (`node_metrics` rows,
    read only then)."""
    if isinstance(outputs, dict) and key in outputs:
        return _number(outputs[key], f"output field '{key}'")
    rows = [m for m in metrics() if m["name"] == key]
    if rows:
        last = max(rows, key=lambda m: (m["time"], m["step"] if m["step"] is not None else -1))
        return _number(last["value"], f"metric '{key}'")
    fields = f" (its output fields: {', '.join(outputs)})" if isinstance(outputs, dict) else ""
    raise ObjectiveMissing(
        f"the objective '{key}' is neither a field of the run's output nor a metric it logged{fields}"
    )


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ObjectiveMissing(f"the objective, {what}, is not a number: {value!r}")
    if not math.isfinite(value):
        raise ObjectiveMissing(f"the objective, {what}, is {value}")
    return float(value)
