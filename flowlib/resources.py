"""Resource requests and distributed-training declarations attached to operators."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from flowlib.errors import WorkflowDefinitionError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(value: int | str | None) -> int | None:
    """Return `value` ("512MiB", "8GiB", "2GB", 1024) in bytes; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise WorkflowDefinitionError(f"memory must be bytes or a string like '8GiB', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise WorkflowDefinitionError(f"memory must not be negative, got {value}")
        return int(value)
    match = _MEMORY.match(str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise WorkflowDefinitionError(
            f"memory {value!r} is not understood: use bytes or a string like '512MiB', '8GiB', '2GB'"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def _labels(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(label, str) and label.strip() == label and label for label in value
    ):
        raise WorkflowDefinitionError(
            f"Resources(labels=...) takes a list of non-empty names like ['big-mem'], got {value!r}"
        )
    return tuple(sorted(set(value)))


@dataclass(frozen=True)
class Resources:
    """What one attempt (one rank, when distributed) needs: CPUs, GPUs, memory (bytes), and
    where it may run: an `accelerator` kind ("a100") and `labels` every chosen host declares."""

    cpus: float = 1
    gpus: int = 0
    memory: int | None = None
    accelerator: str | None = None
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory", parse_memory(self.memory))
        object.__setattr__(self, "labels", _labels(self.labels))
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise WorkflowDefinitionError(f"Resources({name}=...) takes a number, got {value!r}")
        if self.cpus < 0 or self.gpus < 0:
            raise WorkflowDefinitionError(f"resources must not be negative: {self}")
        if self.gpus != int(self.gpus):
            raise WorkflowDefinitionError(f"gpus must be a whole number, got {self.gpus}")
        if self.accelerator is not None and (
            not isinstance(self.accelerator, str) or not self.accelerator.strip()
        ):
            raise WorkflowDefinitionError(
                f"Resources(accelerator=...) takes a name like 'a100', got {self.accelerator!r}"
            )

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"cpus": self.cpus, "gpus": self.gpus, "memory": self.memory}
        if self.accelerator is not None:
            shown["accelerator"] = self.accelerator
        if self.labels:
            shown["labels"] = list(self.labels)
        return shown

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Resources:
        """The inverse of `to_json`: `Resources.from_json(r.to_json()) == r`."""
        return cls(
            cpus=data.get("cpus", 1),
            gpus=data.get("gpus", 0),
            memory=data.get("memory"),
            accelerator=data.get("accelerator"),
            labels=tuple(data.get("labels") or ()),
        )


@dataclass(frozen=True)
class Distributed:
    """Run one node as a torch.distributed process group of `nprocs` ranks on each of `nnodes`
    machines (nnodes > 1 needs an executor that spans machines: `ssh` or `ray`)."""

    nprocs: int = 1
    backend: str = "gloo"
    nnodes: int = 1

    def __post_init__(self) -> None:
        for name in ("nprocs", "nnodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise WorkflowDefinitionError(f"Distributed({name}=...) takes a whole number, got {value!r}")
        if self.nprocs < 1:
            raise WorkflowDefinitionError(f"Distributed(nprocs=...) must be at least 1, got {self.nprocs}")
        if self.nnodes < 1:
            raise WorkflowDefinitionError(f"Distributed(nnodes=...) must be at least 1, got {self.nnodes}")
        if self.backend not in ("gloo", "nccl"):
            raise WorkflowDefinitionError(
                f"Distributed backend must be 'gloo' or 'nccl', got {self.backend!r}"
            )

    def to_json(self) -> dict[str, Any]:
        return {"nprocs": self.nprocs, "backend": self.backend, "nnodes": self.nnodes}


def _times(resources: Resources, ranks: int) -> Resources:
    if ranks == 1:
        return resources
    memory = resources.memory * ranks if resources.memory else None
    return replace(resources, cpus=resources.cpus * ranks, gpus=resources.gpus * ranks, memory=memory)


def per_node(resources: Resources, distributed: Distributed | None) -> Resources:
    """What one machine holds for an attempt: a distributed node's resources once per local rank."""
    return _times(resources, distributed.nprocs if distributed else 1)


def per_attempt(resources: Resources, distributed: Distributed | None) -> Resources:
    """What one attempt holds in all: a distributed node holds its resources once per rank."""
    return _times(resources, distributed.nprocs * distributed.nnodes if distributed else 1)
