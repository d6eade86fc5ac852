"""Resource requests and distributed-training declarations attached to operators, and the matching
of a request against the machines an executor spans (hosts, Ray nodes)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
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


# -- matching a request against machines (for executors that span several) --------------------


@dataclass(frozen=True)
class Machine:
    """One host or Ray node: its totals, its accelerator kinds and its labels."""

    name: str
    cpus: float
    gpus: int = 0
    memory: int | None = None  # None: not accounted
    accelerators: frozenset[str] = frozenset()  # lower-case kinds ("a100")
    labels: frozenset[str] = frozenset()


def lacks(machine: Machine, share: Resources) -> str | None:
    """What `machine` lacks to hold `share` at all (one node's share of an attempt), or None."""
    missing = [label for label in share.labels if label not in machine.labels]
    if missing:
        return f"no label {', '.join(repr(m) for m in missing)}"
    if share.accelerator and share.accelerator.lower() not in machine.accelerators:
        has = ", ".join(sorted(machine.accelerators)) or "none"
        return f"no accelerator {share.accelerator!r} (has {has})"
    if share.cpus > machine.cpus + 1e-9:
        return f"{machine.cpus:g} CPUs, not {share.cpus:g}"
    if share.gpus > machine.gpus:
        return f"{machine.gpus} GPUs, not {share.gpus}"
    if share.memory and machine.memory is not None and share.memory > machine.memory:
        return f"{machine.memory} bytes of memory, not {share.memory}"
    return None


def _describe(share: Resources) -> str:
    """A request in words: '2 CPUs, 1 GPU of kind 'a100', labels 'big-mem''."""
    parts = [f"{share.cpus:g} CPUs", f"{share.gpus} GPUs"]
    if share.accelerator:
        parts[-1] += f" of kind {share.accelerator!r}"
    if share.memory:
        parts.append(f"{share.memory} bytes of memory")
    if share.labels:
        parts.append("labels " + ", ".join(repr(label) for label in share.labels))
    return ", ".join(parts)


def _able(machines: Iterable[Machine], share: Resources) -> list[Machine]:
    return [machine for machine in machines if lacks(machine, share) is None]


def refusal(
    machines: Sequence[Machine], resources: Resources, distributed: Distributed | None, kind: str
) -> str | None:
    """Why no `nnodes` distinct machines could ever hold an attempt's shares, or None.

    `kind` names the machines in the reason ("ssh hosts", "Ray nodes")."""
    share = per_node(resources, distributed)
    nnodes = distributed.nnodes if distributed else 1
    fit = _able(machines, share)
    if len(fit) >= nnodes:
        return None
    per = f"each of {nnodes} {kind}" if nnodes > 1 else f"one of the {kind}"
    why = "; ".join(f"{m.name}: {lacks(m, share) or 'fits'}" for m in machines) or f"there are no {kind}"
    found = f"{len(fit)} of {len(machines)} can" if nnodes > 1 else "none can"
    return f"asks for {_describe(share)} on {per}, but {found} ({why})"
