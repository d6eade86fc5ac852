"""Matching a request against machines: what a host or a Ray node lacks to hold one node's share.

Executors that span machines describe each one as a `Machine` (its totals and what it
declares); `refusal` says why no set of them could ever run an attempt, before it runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flowlib.resources import Distributed, Resources, per_node


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


def describe(share: Resources) -> str:
    """A request in words: '2 CPUs, 1 GPU of kind 'a100', labels 'big-mem''."""
    parts = [f"{share.cpus:g} CPUs", f"{share.gpus} GPUs"]
    if share.accelerator:
        parts[-1] += f" of kind {share.accelerator!r}"
    if share.memory:
        parts.append(f"{share.memory} bytes of memory")
    if share.labels:
        parts.append("labels " + ", ".join(repr(label) for label in share.labels))
    return ", ".join(parts)


def able(machines: Iterable[Machine], share: Resources) -> list[Machine]:
    return [machine for machine in machines if lacks(machine, share) is None]


def refusal(
    machines: Sequence[Machine], resources: Resources, distributed: Distributed | None, kind: str
) -> str | None:
    """Why no `nnodes` distinct machines could ever hold an attempt's shares, or None.

    `kind` names the machines in the reason ("ssh hosts", "Ray nodes")."""
    share = per_node(resources, distributed)
    nnodes = distributed.nnodes if distributed else 1
    fit = able(machines, share)
    if len(fit) >= nnodes:
        return None
    per = f"each of {nnodes} {kind}" if nnodes > 1 else f"one of the {kind}"
    why = "; ".join(f"{m.name}: {lacks(m, share) or 'fits'}" for m in machines) or f"there are no {kind}"
    found = f"{len(fit)} of {len(machines)} can" if nnodes > 1 else "none can"
    return f"asks for {describe(share)} on {per}, but {found} ({why})"
