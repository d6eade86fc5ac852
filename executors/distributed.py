"""Run one task as a torch.distributed process group (Distributed(nprocs=..., backend=...)).

torch.multiprocessing starts the ranks and tears the group down when one fails;
each rank runs the operator through `worker.execute` with the process group
initialised, and only rank 0 stores outputs.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from executors.base import TaskResult, TaskSpec

GRACE_S = 3.0  # how long surviving ranks get to stop after one failed, before SIGTERM/SIGKILL


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_devices(spec: TaskSpec, rank: int) -> str | None:
    """Rank r's slice of the devices the executor assigned to the whole group."""
    visible = [x for x in spec.env.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    per_rank = spec.resources.gpus
    if not visible or not per_rank:
        return None
    return ",".join(visible[rank * per_rank : (rank + 1) * per_rank])


def _run_rank(rank: int, spec_bytes: bytes, port: int, results: str, events: Any) -> None:
    """The body of one rank (a spawned process)."""
    from executors import worker

    worker.die_with_parent()
    spec: TaskSpec = pickle.loads(spec_bytes)
    group = spec.distributed
    env = dict(spec.env)
    devices = _rank_devices(spec, rank)
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    os.environ.update(env)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(group.nprocs),
        LOCAL_WORLD_SIZE=str(group.nprocs),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    import torch.distributed as dist

    if group.backend == "nccl":
        import torch

        torch.cuda.set_device(0)  # this rank sees only its own devices
    dist.init_process_group(group.backend, rank=rank, world_size=group.nprocs)

    def emit(kind: str, data: dict[str, Any]) -> None:
        events.put((kind, data))

    try:
        result = worker.execute(spec, emit, capture="fd", rank=rank, world_size=group.nprocs, in_group=True)
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass
    Path(results, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    if not result.ok:
        os._exit(1)  # a non-zero exit makes the launcher stop the other ranks


def run_group(spec: TaskSpec, emit: Callable[[str, dict[str, Any]], None]) -> TaskResult:
    """Run `spec` on `spec.distributed.nprocs` ranks; return rank 0's result (or the first failure)."""
    import torch.multiprocessing as mp

    group = spec.distributed
    started = time.time()
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
                args=(pickle.dumps(spec), free_port(), results, events),
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


def _combine(
    spec: TaskSpec, ranks: dict[int, TaskResult], failure: Exception | None, started: float
) -> TaskResult:
    logs = "".join(
        f"--- rank {rank} ---\n{result.log}" if rank else result.log for rank, result in sorted(ranks.items())
    )
    # the first rank to fail is the cause; the others typically fail after it (a peer closed)
    failed = sorted((r for r in ranks.items() if not r[1].ok), key=lambda r: r[1].ended_at or 0.0)
    if failure is None and not failed and 0 in ranks:
        result = ranks[0]
        result.log, result.started_at = logs, started
        return result
    if failed:
        rank, result = failed[0]
        result.log = logs
        if result.error:
            result.error["message"] = f"rank {rank} of {spec.distributed.nprocs}: {result.error['message']}"  # type: ignore[union-attr]
        return result
    message = f"the process group of {spec.distributed.nprocs} ranks failed: {failure}"  # type: ignore[union-attr]
    return TaskResult(
        spec.task_id,
        False,
        error={"type": "RankFailed", "message": message, "traceback": None},
        started_at=started,
        ended_at=time.time(),
        log=logs,
    )
