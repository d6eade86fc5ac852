"""The executor contract: the ABC and the plain task types executors exchange.

Executors never import `scheduler`: they get a TaskSpec, run it somewhere, send
Events while it runs and resolve a Future with its TaskResult.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from flowlib.resources import Distributed, Resources, per_attempt


def machine_memory() -> int:
    """This machine's memory in bytes: no single node may ask for more."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # no psutil import on every run
    except (ValueError, OSError, AttributeError):
        import psutil

        return int(psutil.virtual_memory().total)


@dataclass(frozen=True)
class OperatorRef:
    """How a worker finds the operator: import `module` from `file`, then `qualname`;
    or unpickle `pickled` (cloudpickle) when the function cannot be imported."""

    file: str
    module: str
    qualname: str
    pickled: bytes | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One attempt of one node, everything a worker needs to run it."""

    task_id: str
    run_id: str
    node: str
    attempt: int
    operator: OperatorRef
    # param -> what executors.worker.load_input takes (see scheduler.engine.inputs); an input may
    # carry "inline": {digest: bytes} for the artifacts it names that are kept in the database
    inputs: Mapping[str, Mapping[str, Any]]
    resources: Resources = field(default_factory=Resources)
    timeout: float | None = None
    distributed: Distributed | None = None
    store_url: str = ""
    fsync: bool = True
    checkpoint_ref: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    project_root: str = ""
    inline_limit: int = 0  # outputs up to this many bytes come back in the result instead of the store
    split_outputs: tuple[str, ...] = ()  # list outputs to store one artifact per element (a map expands them)


@dataclass
class TaskResult:
    """How an attempt ended. `outputs`: name -> {digest, serializer, serializer_version, size,
    elements? (a split list's element refs), inline? (digest -> bytes of small artifacts)}.
    `log` holds what the attempt printed that no "log" event carried yet."""

    task_id: str
    ok: bool
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # {"type", "message", "traceback"}
    exit_code: int | None = None
    signal: int | None = None
    host: str | None = None
    pid: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    log: str = ""

    @classmethod
    def failure(cls, task_id: str, kind: str, message: str, **how: Any) -> TaskResult:
        now = time.time()
        how.setdefault("started_at", now)
        return cls(
            task_id, False, error={"type": kind, "message": message, "traceback": None}, ended_at=now, **how
        )


@dataclass(frozen=True)
class Event:
    """Something a running task reports: kind "started" (a worker began it), "metric",
    "checkpoint" or "log" (lines it printed, in order)."""

    task_id: str
    kind: str
    data: Mapping[str, Any]
    time: float = field(default_factory=time.time)


EventSink = Callable[[Event], None]

# A timeout counts from the start of the operator, which its worker reports at once ("started").
# Until then an executor allows this much on top of it, for the worker to get there (a worker
# starting up, importing the pipeline's libraries; loading the inputs); past it the worker counts
# as hung.
START_ALLOWANCE_S = 60.0


def timed_out(timeout: float) -> str:
    """The error of an attempt killed at its timeout."""
    return f"timed out after {timeout:g} s and was killed"


def not_begun(timeout: float) -> str:
    """The error of an attempt killed before its operator began."""
    return (
        f"did not start within {timeout + START_ALLOWANCE_S:g} s of being handed to its worker and was killed"
    )


class Executor(ABC):
    """Runs TaskSpecs. `capacity` gives totals; the scheduler does the accounting."""

    name: ClassVar[str]
    # How many tasks beyond capacity the scheduler may hand over early. An executor that
    # queues them and keeps to its capacity itself sets this, so its workers never idle
    # while the scheduler commits a step.
    prefetch: int = 0
    # True for an executor that runs a task inside submit() (inline): while it does, nothing
    # else runs on the scheduler's thread, so no other executor's loop may depend on that thread.
    runs_in_submit: ClassVar[bool] = False

    @abstractmethod
    def start(self, settings: Mapping[str, Any]) -> None:
        """Get ready (start workers, connect); `settings` is the [executors.NAME] table."""

    @abstractmethod
    def capacity(self) -> Resources:
        """Total resources this executor can run at once."""

    @abstractmethod
    def submit(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        """Start `task` without blocking; the future resolves with its TaskResult (never raises)."""

    @abstractmethod
    def cancel(self, task_id: str) -> None:
        """Stop a submitted task; its future resolves with a failed TaskResult."""

    def stop(self, task_id: str, grace: float) -> None:
        """Stop a submitted task, asking its operator to end within `grace` seconds before it is
        killed where the executor can (see executors.stopping); by default, `cancel` it."""
        self.cancel(task_id)

    @abstractmethod
    def shutdown(self) -> None:
        """Stop everything this executor started; no process outlives it."""

    def refuses(self, resources: Resources, distributed: Distributed | None) -> str | None:
        """Why this executor could never run an attempt asking for this (one line), else None.

        Called (after `start`) before a run starts, so a request no machine can meet is a usage
        error instead of a node that waits forever. This default runs on one machine of `capacity()`
        totals; executors that span machines (`ssh`, `ray`) check each machine instead.
        """
        if distributed is not None and distributed.nnodes > 1:
            return (
                f"asks for Distributed(nnodes={distributed.nnodes}), but executor '{self.name}' runs "
                "on one machine; spread ranks over machines with executor 'ssh' or 'ray'"
            )
        if resources.accelerator or resources.labels:
            wanted = [f"accelerator {resources.accelerator!r}"] if resources.accelerator else []
            wanted += [f"label {label!r}" for label in resources.labels]
            return (
                f"asks for {' and '.join(wanted)}, but executor '{self.name}' declares none; hosts "
                "declare them for executor 'ssh', nodes (as custom resources) for executor 'ray'"
            )
        capacity = self.capacity()
        need = per_attempt(resources, distributed)
        cpus, gpus, memory = need.cpus, need.gpus, need.memory or 0
        if capacity.memory is not None and memory > capacity.memory:
            return (
                f"asks for {memory} bytes of memory, but executor '{self.name}' has at most {capacity.memory}"
            )
        if cpus > capacity.cpus or gpus > capacity.gpus:
            hint = (
                '; run GPU nodes with --executor gpu or executor="gpu"' if gpus and self.name != "gpu" else ""
            )
            return (
                f"asks for {cpus:g} CPUs and {gpus} GPUs, but executor '{self.name}' has at most "
                f"{capacity.cpus:g} CPUs and {capacity.gpus} GPUs{hint}"
            )
        return None


@runtime_checkable
class Drivable(Protocol):
    """An executor whose event loop a caller may run on its own thread (see LocalExecutor)."""

    def drive_here(self) -> None: ...
    def loop_handles(self) -> list[Any]: ...
    def loop_timeout(self) -> float | None: ...
    def serve(self, ready: Collection[Any]) -> None: ...


@runtime_checkable
class Holding(Protocol):
    """An executor that takes tasks ahead of their start (see LocalExecutor.submit_held)."""

    def submit_held(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]: ...
    def release(self, task_ids: Collection[str]) -> None: ...


def input_refs(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every artifact ref one worker input names (see executors.worker.load_input)."""
    if "ref" in spec:
        return [spec["ref"]]
    if "fields" in spec:
        return list(spec["fields"].values())
    for kind in ("list", "tuple"):
        if kind in spec:
            return [ref for item in spec[kind] for ref in input_refs(item)]
    if "dict" in spec:
        return [ref for _, item in spec["dict"] for ref in input_refs(item)]
    return []
