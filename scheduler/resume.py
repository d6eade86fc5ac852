"""`flow resume`: plan which nodes of an earlier run to reuse or rerun, and why; then run it."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row

from flowlib.config import Config
from flowlib.dag import DAG
from flowlib.errors import FlowError
from flowlib.hashing import diff_fingerprints, find_project_root, node_key
from flowlib.loading import select_workflow
from flowlib.params import parse_params
from scheduler.service import connect
from scheduler.store import repository as repo
from scheduler.store.readback import RunNotFound
from scheduler.tasks import Fingerprints, NodeState, input_spec

STALE_HEARTBEAT_S = 30.0
NEVER_RAN = {"pending", "queued", "upstream_failed"}


class RunStillActive(FlowError):
    """The run's scheduler is alive; resuming it now would run nodes twice."""


@dataclass
class Step:
    name: str
    action: str  # "reuse" | "rerun"
    reasons: list[str] = field(default_factory=list)
    reuse: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "reasons": self.reasons}


def scheduler_alive(run: Row) -> bool:
    """Whether the scheduler that recorded `run` still runs it (pid alive here, heartbeat fresh)."""
    if run.status not in ("running", "pending"):
        return False
    if run.heartbeat_at is None or time.time() - run.heartbeat_at > STALE_HEARTBEAT_S:
        return False
    if run.host == socket.gethostname() and run.pid:
        try:
            os.kill(run.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def rebuild(run: Row) -> DAG:
    """Build the run's workflow again from its file and parameters, with the code as it is now."""
    wf = select_workflow(run.file, run.workflow)
    return wf.build(**parse_params(wf, {}, run.params or {}))


def _old_status(old: Row | None) -> list[str]:
    if old is None or old.status in NEVER_RAN:
        return ["never ran"]
    if old.status == "failed":
        return ["failed"]
    if old.status == "running" or (old.status == "cancelled" and old.attempts):
        return ["interrupted"]
    if old.status == "cancelled":
        return ["never ran"]
    return []


def make_plan(
    dag: DAG, old_nodes: dict[str, Row], conn: Connection, fingerprints: Fingerprints
) -> list[Step]:
    """Decide, in build order (a topological order), whether each node is reused or rerun."""
    steps: dict[str, Step] = {}
    states: dict[str, NodeState] = {}
    old_parts = repo.fingerprint_parts(conn, [old.fingerprint for old in old_nodes.values()])
    for name, node in dag.nodes.items():
        old = old_nodes.get(name)
        reasons = _old_status(old)
        upstream_reruns = any(steps[up].action == "rerun" for up in node.upstream())
        key = None
        if node.kind == "task":
            fingerprint = fingerprints.of(node.operator)
            if old is not None and old.fingerprint and old.fingerprint != fingerprint.digest:
                before = old_parts.get(old.fingerprint, {})
                reasons += diff_fingerprints(before, fingerprints.json_of(node.operator))
            if not upstream_reruns:
                digests = {param: input_spec(value, states)[1] for param, value in node.inputs.items()}
                old_inputs = (old.inputs or {}) if old is not None else {}
                if old is not None and old.inputs is not None:
                    reasons += [
                        f"input changed: {p}" for p in sorted(digests) if old_inputs.get(p) != digests[p]
                    ]
                key = node_key(fingerprint.digest, digests)
        if upstream_reruns:
            reasons.append("upstream reruns")
        outputs = None
        if not reasons and old is not None:
            step = Step(name, "reuse", ["succeeded before"])
            outputs = old.outputs
            step.reuse = {
                "outputs": old.outputs,
                "cache_key": old.cache_key,
                "fingerprint": old.fingerprint,
                "inputs": old.inputs,
            }
            if (
                node.kind == "map" and node.items is None
            ):  # its items were added at run time: keep them listed
                step.reuse["items"] = [
                    {
                        "name": item.name,
                        "operator": item.operator,
                        "outputs": item.outputs,
                        "cache_key": item.cache_key,
                        "fingerprint": item.fingerprint,
                        "inputs": item.inputs,
                    }
                    for item in old_nodes.values()
                    if item.map_parent == name
                ]
        elif key is not None and (entry := repo.find_cache_entries(conn, [key]).get(key)) is not None:
            step = Step(name, "reuse", ["cache hit"])
            outputs = entry.outputs
            step.reuse = {
                "outputs": entry.outputs,
                "cache_key": key,
                "fingerprint": entry.fingerprint,
                "inputs": entry.inputs,
            }
        else:
            step = Step(name, "rerun", reasons or ["upstream reruns"])
        steps[name] = step
        states[name] = NodeState(node, 0, outputs=outputs)
    return list(steps.values())


def plan_for(run_id: str, config: Config) -> tuple[Row, DAG, list[Step]]:
    engine = connect(config)
    with engine.connect() as conn:
        run = repo.find_run(conn, run_id)
        if run is None:
            raise RunNotFound(f"no run '{run_id}' in this database")
        if scheduler_alive(run):
            raise RunStillActive(
                f"run {run.id} is still running (scheduler pid {run.pid} on host {run.host}); "
                "wait for it or `flow cancel` it first"
            )
        dag = rebuild(run)
        old_nodes = {node.name: node for node in repo.nodes_of(conn, run.id)}
        plan = make_plan(dag, old_nodes, conn, Fingerprints(find_project_root(dag.file)))
    return run, dag, plan


def resume_run(
    run_id: str, config: Config, *, executor: str | None = None, progress: Any = None, on_recorded: Any = None
) -> str:
    """Resume `run_id`: record a new run linked to it, reuse what the plan keeps, run the rest."""
    from scheduler.service import RunOptions, execute_dag

    run, dag, plan = plan_for(run_id, config)
    engine = connect(config)
    if run.status in ("running", "pending"):
        with engine.begin() as conn:
            repo.update_run(
                conn,
                run.id,
                status="failed",
                error="interrupted: its scheduler died",
                ended_at=time.time(),
            )
    reuse = {step.name: step.reuse for step in plan if step.action == "reuse" and step.reuse is not None}
    reasons = {step.name: step.reasons for step in plan}
    options = RunOptions(executor=executor or run.executor, use_cache=True, progress=progress)
    return execute_dag(
        dag,
        config,
        options,
        resumed_from=run.id,
        root_run_id=run.root_run_id or run.id,
        reuse=reuse,
        reasons=reasons,
        on_recorded=on_recorded,
    )
