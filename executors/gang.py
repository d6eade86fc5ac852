"""What every launcher of a process group over several machines shares (ssh hosts, Ray nodes).

A multi-node attempt runs one copy of the spec per machine, told apart by the
environment: `NODE_RANK`, and `MASTER_ADDR`/`MASTER_PORT` of node 0. Node 0
starts first, picks a free port on its machine and reports it as a RENDEZVOUS
event; the launcher then starts the other nodes pointed at it. When a rank
fails, its peers fail too, with connection errors: the attempt's error is the
first one a rank's own code raised, not those consequences.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from executors.base import TaskResult, TaskSpec

RENDEZVOUS = "rendezvous"  # event of node 0: {"addr": MASTER_ADDR or "", "port": MASTER_PORT}
GANG_GRACE_S = 6.0  # after a peer's connection error, how long to wait for the failure that caused it

# What a rank raises because a peer went away (not because of its own code).
_CONSEQUENT = re.compile(
    r"Connection (?:closed|reset) by peer|Broken pipe|Connection refused|remote worker crashing"
    r"|Socket Timeout|DistNetworkError|DistStoreError|DistBackendError|NCCL communicator was aborted",
    re.IGNORECASE,
)
_CONSEQUENT_TYPES = {"DistNetworkError", "DistStoreError", "DistBackendError", "ConnectionResetError"}


def consequent(error: Mapping[str, Any] | None) -> bool:
    """Whether a rank's error is a consequence of a peer's failure (a closed connection)."""
    if not error:
        return False
    return error.get("type") in _CONSEQUENT_TYPES or bool(_CONSEQUENT.search(str(error.get("message", ""))))


def first_failure(results: Sequence[TaskResult]) -> TaskResult | None:
    """The failure that caused the others: the earliest a rank's own code raised, else the earliest."""
    failed = [result for result in results if not result.ok]
    own = [result for result in failed if not consequent(result.error)]
    return min(own or failed, key=lambda r: r.ended_at or 0.0) if failed else None


def node_spec(spec: TaskSpec, node: int, addr: str, port: int | None) -> TaskSpec:
    """The copy of `spec` that node `node` runs (its own task id, for per-node bookkeeping)."""
    env = {**spec.env, "NODE_RANK": str(node), "MASTER_ADDR": addr}
    if port is not None:
        env["MASTER_PORT"] = str(port)
    return replace(spec, task_id=f"{spec.task_id}/node{node}", env=env)


def combine(
    spec: TaskSpec,
    nodes: Sequence[TaskResult | None],
    where: Sequence[str],
    lost: Sequence[TaskResult],
    started: float,
) -> TaskResult:
    """The attempt's result from each node's (None: never ended with one) and the machines lost.

    `where[k]` names node k's machine ("ssh host gpu-1:22"). Precedence: a rank's own error,
    then a lost machine, then a peer's consequent error."""
    logs = "".join(
        f"--- node {k} ({where[k]}) ---\n{result.log}" for k, result in enumerate(nodes) if result is not None
    )
    hosts = ", ".join(where)
    if lost == [] and all(result is not None and result.ok for result in nodes):
        result = replace(nodes[0], task_id=spec.task_id, log=logs, started_at=started, host=hosts)  # type: ignore[type-var]
        return result
    ended = [(k, r) for k, r in enumerate(nodes) if r is not None]
    cause = first_failure([r for _, r in ended])
    if cause is not None and (consequent(cause.error) or cause.ok) and lost:
        cause = None
    if cause is None and lost:
        chosen = replace(lost[0], task_id=spec.task_id, log=logs, started_at=started)
        return chosen
    if cause is None:
        message = "the process group ended without a result from any node"
        return TaskResult.failure(
            spec.task_id, "RankFailed", message, started_at=started, log=logs, host=hosts
        )
    node = next(k for k, r in ended if r is cause)
    error = dict(cause.error or {"type": "RankFailed", "message": "failed", "traceback": None})
    error["message"] = f"node {node} ({where[node]}): {error.get('message')}"
    return replace(
        cause,
        task_id=spec.task_id,
        error=error,
        log=logs,
        started_at=started,
        ended_at=cause.ended_at or time.time(),
        host=where[node],
    )
