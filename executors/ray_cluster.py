"""Ray's cluster as the `ray` executor's driver sees it: reaching it, its nodes as placement
Machines (custom resources are labels and accelerator kinds), and its failures as ours."""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

from executors.base import TaskResult
from flowlib.errors import ConfigError
from flowlib.resources import Machine, Resources

_log = logging.getLogger("flowlib.executors.ray")
REACH_S = 5.0  # how long connecting to a cluster's address may take
SLIVER = 0.001  # how much of a label's (or an accelerator kind's) custom resource one task takes
_BUILTIN = ("CPU", "GPU", "memory", "object_store_memory")


def route_ray_errors() -> None:
    """Send the "(raylet) A worker died ..." notices Ray prints on the driver's *stdout* to a logger.

    They would corrupt `flow run --json`, and the failed attempt already says what happened.
    This replaces a private Ray function; where it is missing, Ray prints as before.
    """
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "flowlib_routed", False):
        return

    def route(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix)
            return
        for line in data.get("lines") or ():
            _log.debug("Ray: %s", line)

    route.flowlib_routed = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = route


# -- mapping Ray's failures onto ours -------------------------------------------------------------


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def failure_from(task_id: str, exc: BaseException, started: float) -> TaskResult:
    """Turn an exception from a Ray task's result into a failed TaskResult saying what happened."""
    import ray.exceptions as rex

    text = str(exc)
    pid = re.search(r"Worker PID: (\d+)", text)
    where = re.search(r"Worker IP address: (\S+)", text)
    how: dict[str, Any] = {"started_at": started, "pid": int(pid.group(1)) if pid else None}
    if where:
        how["host"] = where.group(1)
    if isinstance(exc, rex.OutOfMemoryError):
        return TaskResult.failure(
            task_id,
            "OutOfMemory",
            f"Ray killed the task because its node ran out of memory: {_first_line(text)}",
            **how,
        )
    if isinstance(exc, rex.WorkerCrashedError):
        detail = re.search(r"Worker exit detail: (.*?)(?: Some common causes|$)", text, re.DOTALL)
        at = f" (pid {how['pid']})" if how["pid"] else ""
        said = f"; Ray says: {detail.group(1).strip()}" if detail and detail.group(1).strip() else ""
        return TaskResult.failure(
            task_id,
            "WorkerDied",
            f"the Ray worker process{at} died while running the task: it called os._exit, was killed by "
            f"a signal (SIGKILL, the kernel's OOM killer) or crashed (SIGSEGV){said}",
            **how,
        )
    if isinstance(exc, rex.TaskCancelledError):
        return TaskResult.failure(task_id, "Cancelled", "the Ray task was cancelled outside flowlib", **how)
    if isinstance(exc, rex.TaskUnschedulableError):
        return TaskResult.failure(task_id, "Unschedulable", _first_line(text), **how)
    if isinstance(
        exc, (rex.NodeDiedError, rex.LocalRayletDiedError, rex.ObjectLostError, rex.RaySystemError)
    ):
        return TaskResult.failure(task_id, "WorkerDied", f"Ray lost the task: {_first_line(text)}", **how)
    if isinstance(exc, rex.RayTaskError):  # our task body itself failed, e.g. flowlib missing on a node
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        result = TaskResult.failure(
            task_id, type(cause).__name__, f"the Ray task could not run: {cause}", **how
        )
        result.error["traceback"] = getattr(exc, "traceback_str", None)  # type: ignore[index]
        return result
    return TaskResult.failure(task_id, type(exc).__name__, f"Ray: {_first_line(text)}", **how)


def check_reachable(address: str) -> None:
    """Fail fast on a cluster address nobody listens at (Ray itself retries for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"[executors.ray] address: '{address}' is not 'auto', 'host:port' or 'ray://host:port'"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_S).close()
    except OSError as exc:
        raise ConfigError(
            f"[executors.ray] address: cannot reach the Ray cluster at '{address}': {exc}"
        ) from None


def machines(nodes: list[dict[str, Any]]) -> list[Machine]:
    """The alive nodes of `ray.nodes()` as Machines: custom resources are labels, except
    `accelerator_type:KIND`, which is an accelerator kind."""
    found = []
    for node in nodes:
        if not node.get("Alive"):
            continue
        have: dict[str, float] = node.get("Resources") or {}
        kinds = {k.partition(":")[2].lower() for k in have if k.startswith("accelerator_type:")}
        labels = {k for k in have if k not in _BUILTIN and not k.startswith(("node:", "accelerator_type:"))}
        memory = have.get("memory")
        name = f"Ray node {node.get('NodeManagerAddress', '?')} ({str(node.get('NodeID', ''))[:8]})"
        found.append(
            Machine(
                name,
                have.get("CPU", 0.0),
                int(have.get("GPU", 0)),
                int(memory) if memory else None,
                frozenset(kinds),
                frozenset(labels),
            )
        )
    return found


def custom_resources(resources: Resources, kinds: dict[str, str]) -> dict[str, float]:
    """The custom resources a task asks a sliver of: its labels, and its accelerator's kind
    (`kinds`: lower-case kind -> the cluster's resource name)."""
    wanted = dict.fromkeys(resources.labels, SLIVER)
    if resources.accelerator:
        name = kinds.get(resources.accelerator.lower(), f"accelerator_type:{resources.accelerator}")
        wanted[name] = SLIVER
    return wanted
