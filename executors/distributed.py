"""Run one task as a torch.distributed process group (Distributed(nprocs=..., backend=...)).

torch.multiprocessing starts this machine's ranks and tears them down when one
fails; each rank runs the operator through `worker.execute` with the process
group initialised, and only rank 0 stores outputs. With nnodes > 1 this runs once
per machine, launched by `ssh` or `ray` (executors.ssh_gang, ray_gang): the spec's env then
says which node this is and where node 0 listens, and node 0 reports its port.

What every launcher over several machines shares is here too: each node's copy
of the spec (`node_spec`) and the attempt's result from the nodes' (`combine`).
When a rank fails, its peers fail too, with connection errors: the attempt's
error is the first one a rank's own code raised, not those consequences.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
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

GRACE_S = 3.0  # how long surviving ranks get to stop after one failed, before SIGTERM/SIGKILL


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _rank_devices(spec: TaskSpec, rank: int) -> str | None:
    """Rank r's slice of the devices the executor assigned to the whole group."""
    visible = [x for x in spec.env.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    per_rank = spec.resources.gpus
    if not visible or not per_rank:
        return None
    return ",".join(visible[rank * per_rank : (rank + 1) * per_rank])


def _run_rank(local: int, spec_bytes: bytes, port: int, results: str, events: Any) -> None:
    """The body of one rank (a spawned process); `local` is its index on this machine."""
    from executors import worker

    worker.die_with_parent()
    spec: TaskSpec = pickle.loads(spec_bytes)
    group = spec.distributed
    node = int(spec.env.get("NODE_RANK", "0"))
    rank, world = node * group.nprocs + local, group.nprocs * group.nnodes
    devices = _rank_devices(spec, local)
    if devices is not None:  # the operator (current.gpus, its env) sees this rank's devices only
        spec = dataclasses.replace(spec, env={**spec.env, "CUDA_VISIBLE_DEVICES": devices})
    os.environ.update(spec.env)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(local),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(group.nprocs),
        NODE_RANK=str(node),
        MASTER_ADDR=spec.env.get("MASTER_ADDR") or "127.0.0.1",
        MASTER_PORT=str(port),
    )
    import torch.distributed as dist

    if group.backend == "nccl":
        import torch

        torch.cuda.set_device(0)  # this rank sees only its own devices
    dist.init_process_group(group.backend, rank=rank, world_size=world)

    def emit(kind: str, data: dict[str, Any]) -> None:
        events.put((kind, data))

    try:
        result = worker.execute(spec, emit, capture="fd", rank=rank, world_size=world, in_group=True)
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass
    Path(results, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    if not result.ok:
        os._exit(1)  # a non-zero exit makes the launcher stop the other ranks


def run_group(spec: TaskSpec, emit: Callable[[str, dict[str, Any]], None]) -> TaskResult:
    """Run this machine's `spec.distributed.nprocs` ranks; return the result of its first rank
    (rank 0's, with the outputs, on node 0) or the failure that caused the others."""
    import torch.multiprocessing as mp

    group = spec.distributed
    started = time.time()
    if group.nnodes > 1 and "NODE_RANK" not in spec.env:
        message = (
            f"Distributed(nnodes={group.nnodes}) needs an executor that spans machines "
            "('ssh' or 'ray'); this one runs ranks on one machine"
        )
        return TaskResult.failure(spec.task_id, "NotSupported", message)
    port = int(spec.env["MASTER_PORT"]) if spec.env.get("MASTER_PORT") else None
    if port is None:
        port = free_port("" if group.nnodes > 1 else "127.0.0.1")
        if group.nnodes > 1:  # node 0: the launcher starts the other nodes once it knows where
            emit(RENDEZVOUS, {"addr": spec.env.get("MASTER_ADDR", ""), "port": port})
    context = mp.get_context("spawn")
    events = context.SimpleQueue()

    def forward() -> None:
        while True:
            try:
                item = events.get()
            except (EOFError, OSError):
                return
            if item is None:
                return
            emit(*item)

    forwarder = threading.Thread(target=forward, name="flowlib-rank-events", daemon=True)
    forwarder.start()
    with tempfile.TemporaryDirectory(prefix="flowlib-ranks-") as results:
        failure = None
        try:
            processes = mp.start_processes(
                _run_rank,
                args=(pickle.dumps(spec), port, results, events),
                nprocs=group.nprocs,
                join=False,
                start_method="spawn",
            )
            while not processes.join(grace_period=GRACE_S):
                pass
        except Exception as exc:  # ProcessRaisedException / ProcessExitedException: the group is down
            failure = exc
        finally:
            events.put(None)  # every rank has exited: nothing more comes
            forwarder.join(timeout=5)
        ranks = {
            int(path.stem[4:]): pickle.loads(path.read_bytes()) for path in Path(results).glob("rank*.pkl")
        }
    return _combine(spec, ranks, failure, started)


def _exited(spec: TaskSpec, failure: Exception | None, ranks: dict[int, TaskResult]) -> TaskResult | None:
    """A rank that died without a result (os._exit, a signal, an error outside the operator)."""
    index = getattr(failure, "error_index", None)
    if failure is None or index is None:
        return None
    group = spec.distributed
    rank = int(spec.env.get("NODE_RANK", "0")) * group.nprocs + index  # type: ignore[union-attr]
    if rank in ranks:
        return None
    code, signal_name = getattr(failure, "exit_code", None), getattr(failure, "signal_name", None)
    if signal_name:
        how = f"was killed by {signal_name}"
    elif code is not None:
        how = f"exited with code {code}"
    else:  # raised outside the operator: the last line of its traceback says what
        lines = [line for line in str(failure).splitlines() if line.strip()]
        how = f"failed: {lines[-1].strip() if lines else failure}"
    result = TaskResult.failure(spec.task_id, "RankFailed", f"rank {rank} {how}")
    result.exit_code, result.error["traceback"] = code, None  # type: ignore[index]
    return result


def _combine(
    spec: TaskSpec, ranks: dict[int, TaskResult], failure: Exception | None, started: float
) -> TaskResult:
    group = spec.distributed
    world = group.nprocs * group.nnodes  # type: ignore[union-attr]
    first = min(ranks, default=0)
    logs = "".join(
        f"--- rank {rank} ---\n{result.log}" if rank != first else result.log
        for rank, result in sorted(ranks.items())
    )
    if failure is None and first in ranks and all(result.ok for result in ranks.values()):
        result = ranks[first]
        result.log, result.started_at = logs, started
        return result
    died = _exited(spec, failure, ranks)
    candidates = [*ranks.values(), *([died] if died else [])]
    cause = first_failure(candidates)
    if cause is not None:
        rank = next((r for r, result in ranks.items() if result is cause), None)
        cause.log = logs
        if cause.error and rank is not None:
            cause.error["message"] = f"rank {rank} of {world}: {cause.error['message']}"
        elif cause.error:
            cause.error["message"] = f"{cause.error['message']} (of {world} ranks)"
        cause.started_at = started
        return cause
    message = f"the process group of {world} ranks failed: {failure}"
    return TaskResult(
        spec.task_id,
        False,
        error={"type": "RankFailed", "message": message, "traceback": None},
        started_at=started,
        ended_at=time.time(),
        log=logs,
    )


# -- several machines ---------------------------------------------------------------------------


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
    return dataclasses.replace(spec, task_id=f"{spec.task_id}/node{node}", env=env)


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
    first = nodes[0]
    if not lost and first is not None and all(result is not None and result.ok for result in nodes):
        return dataclasses.replace(first, task_id=spec.task_id, log=logs, started_at=started, host=hosts)
    ended = [(k, r) for k, r in enumerate(nodes) if r is not None]
    cause = first_failure([r for _, r in ended])
    if lost and (cause is None or consequent(cause.error)):
        return dataclasses.replace(lost[0], task_id=spec.task_id, log=logs, started_at=started)
    if cause is None:
        message = "the process group ended without a result from every node"
        return TaskResult.failure(
            spec.task_id, "RankFailed", message, started_at=started, log=logs, host=hosts
        )
    node = next(k for k, r in ended if r is cause)
    error = dict(cause.error or {"type": "RankFailed", "message": "failed", "traceback": None})
    error["message"] = f"node {node} ({where[node]}): {error.get('message')}"
    return dataclasses.replace(
        cause,
        task_id=spec.task_id,
        error=error,
        log=logs,
        started_at=started,
        ended_at=cause.ended_at or time.time(),
        host=where[node],
    )
