"""What the run state machine knows of each node, and how an attempt can fail."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from flowlib.plan import OperatorSpec, PlanNode
from flowlib.results import NodeStatus


class FailureKind(enum.Enum):
    """Why an attempt failed, as the retry logic sees it."""

    ERROR = "error"  # the operator raised (or returned a value of the wrong type)
    TIMEOUT = "timeout"  # killed after its timeout
    WORKER_LOST = "worker_lost"  # its worker process or host died
    CANCELLED = "cancelled"  # stopped on purpose: never retried

    @classmethod
    def of(cls, error: dict[str, Any] | None) -> FailureKind:
        kind = (error or {}).get("type")
        if kind == "Cancelled":
            return cls.CANCELLED
        if kind == "Timeout":
            return cls.TIMEOUT
        if kind in ("WorkerDied", "HostDown", "WorkerLost"):
            return cls.WORKER_LOST
        return cls.ERROR

    @property
    def retryable(self) -> bool:
        return self is not FailureKind.CANCELLED


@dataclass(slots=True)
class NodeState:
    """One node while the run goes on. `outputs` maps output name -> artifact ref (a split list's
    ref also lists its `elements`, in memory only)."""

    node: PlanNode
    op: OperatorSpec
    status: NodeStatus = NodeStatus.PENDING
    waiting: int = 0  # upstream nodes not done yet
    attempts: int = 0
    outputs: dict[str, dict[str, Any]] | None = None
    key: str | None = None
    input_digests: dict[str, str] = field(default_factory=dict)
    input_specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # param -> what the worker gets
    reasons: list[str] = field(default_factory=list)  # why it reran or did something unusual
    executor: str = ""
    task_id: str | None = None
    started_at: float | None = None  # when a worker first started it
    error: dict[str, Any] | None = None
    reuse: dict[str, Any] | None = None  # outputs a resume keeps from the run it resumes
    parent: str | None = None  # the map an item belongs to
    items: list[str] | None = None  # a map's item nodes, once it has expanded
    same_as: str | None = None  # the node of this run computing the same key, when waiting on it

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def kind(self) -> str:
        return self.node.kind
