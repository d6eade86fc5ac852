"""Resource requests and distributed-training declarations attached to operators."""

from __future__ import annotations

import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Resources:
    """What one attempt of an operator needs: CPUs, GPUs and memory (bytes)."""

    cpus: float = 1
    gpus: int = 0
    memory: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory", parse_memory(self.memory))
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise WorkflowDefinitionError(f"Resources({name}=...) takes a number, got {value!r}")
        if self.cpus < 0 or self.gpus < 0:
            raise WorkflowDefinitionError(f"resources must not be negative: {self}")
        if self.gpus != int(self.gpus):
            raise WorkflowDefinitionError(f"gpus must be a whole number, got {self.gpus}")

    def to_json(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "gpus": self.gpus, "memory": self.memory}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resources:
        return cls(**data)


@dataclass(frozen=True)
class Distributed:
    """Run one node as a torch.distributed process group of `nprocs` ranks per node."""

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
        if self.nnodes != 1:
            raise WorkflowDefinitionError(
                f"Distributed(nnodes={self.nnodes}) is not supported yet: only nnodes=1 runs today"
            )
        if self.backend not in ("gloo", "nccl"):
            raise WorkflowDefinitionError(
                f"Distributed backend must be 'gloo' or 'nccl', got {self.backend!r}"
            )

    def to_json(self) -> dict[str, Any]:
        return {"nprocs": self.nprocs, "backend": self.backend, "nnodes": self.nnodes}


def per_attempt(resources: Resources, distributed: Distributed | None) -> Resources:
    """What one attempt holds in all: a distributed node holds its resources once per rank."""
    ranks = distributed.nprocs if distributed else 1
    if ranks == 1:
        return resources
    memory = resources.memory * ranks if resources.memory else None
    return Resources(resources.cpus * ranks, resources.gpus * ranks, memory)
