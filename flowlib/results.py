"""What a run returns: RunResult, NodeResult and the status enums (plain-string comparable)."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowlib.errors import FlowError


class RunStatus(str, enum.Enum):
    PENDING = "pending"
    QUEUED = "queued"  # submitted to a server, not claimed yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # its scheduler died (read from a `running` row without a live scheduler)

    def __str__(self) -> str:
        return self.value


class NodeStatus(str, enum.Enum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CACHED = "cached"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # was unfinished when its scheduler died

    def __str__(self) -> str:
        return self.value


DONE = frozenset({NodeStatus.SUCCEEDED, NodeStatus.CACHED})
FINAL = frozenset(
    {
        NodeStatus.SUCCEEDED,
        NodeStatus.CACHED,
        NodeStatus.FAILED,
        NodeStatus.UPSTREAM_FAILED,
        NodeStatus.CANCELLED,
        NodeStatus.INTERRUPTED,
    }
)
UNFINISHED = frozenset({NodeStatus.PENDING, NodeStatus.QUEUED, NodeStatus.RUNNING})


@dataclass
class NodeResult:
    name: str
    operator: str
    status: NodeStatus
    cached: bool
    attempts: int
    duration_s: float | None
    error: Any
    reasons: list[str] | None = None  # why it reran or was recomputed, where something unusual happened

    def to_json(self) -> dict[str, Any]:
        shown = {
            "name": self.name,
            "operator": self.operator,
            "status": str(self.status),
            "cached": self.cached,
            "attempts": self.attempts,
            "duration_s": self.duration_s,
            "error": self.error,
        }
        if self.reasons:
            shown["reasons"] = self.reasons
        return shown


@dataclass
class RunResult:
    """A run as recorded: `outputs` holds the workflow's return value, loaded on first use."""

    run_id: str
    workflow: str
    status: RunStatus
    nodes: list[NodeResult] = field(default_factory=list)
    resumed_from: str | None = None
    error: str | None = None
    _load_outputs: Callable[[], tuple[Any, Any]] | None = field(default=None, repr=False)
    _loaded: tuple[Any, Any] | None = field(default=None, repr=False)
    _node_outputs: Any = field(default=None, repr=False)

    @property
    def node_outputs(self) -> Mapping[str, Any]:
        """Every node's outputs as Python values, by node name, each loaded on first access: the
        value of a one-output node, a NamedTuple (or tuple) for a multi-output one."""
        return self._node_outputs if self._node_outputs is not None else {}

    def _outputs(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = self._load_outputs() if self._load_outputs else (None, None)
            self._load_outputs = None  # it holds the run's artifact caches
        return self._loaded

    @property
    def outputs(self) -> Any:
        """The workflow's return value as Python values (None until the run succeeded)."""
        return self._outputs()[0]

    def outputs_json(self) -> Any:
        """The outputs as JSON can hold them: NamedTuples by field, others by repr."""
        try:
            return self._outputs()[1]
        except FlowError as exc:
            return f"<{exc}>"

    def to_json(self, *, with_nodes: bool = True, with_outputs: bool = True) -> dict[str, Any]:
        loaded = with_outputs and self.status == RunStatus.SUCCEEDED
        shown: dict[str, Any] = {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": str(self.status),
            "outputs": self.outputs_json() if loaded else None,
            "resumed_from": self.resumed_from,
            "error": self.error,
        }
        if with_nodes:
            shown["nodes"] = [node.to_json() for node in self.nodes]
        return shown


def jsonable(value: Any) -> Any:
    """Return `value` as JSON can hold it (docs/results.md, "Outputs in JSON"), else its repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {name: jsonable(getattr(value, name)) for name in value._fields}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: jsonable(item) for key, item in value.items()}
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
