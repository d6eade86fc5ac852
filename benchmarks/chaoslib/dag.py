"""Random DAGs for the chaos trials, written out as a flowlib pipeline file.

A DAG is made of motifs (chain, fan-out, diamond, map) hung under values made earlier; every
operator is its own function (so each has its own options: `retries=`, `cache=False`, a
checkpointed loop, a big output that lands in the file store). Values are strings derived by
hashing the operator's name and inputs, so a run's outputs depend on nothing but the DAG.

Each real execution appends `NODE RUN ATTEMPT PID` to the file named by `CHAOS_MARKS` before
it does anything else, so re-executions are counted by the operators themselves, and the pid
says which worker process runs which node. `CHAOS_FAST=1` skips the sleeps (reference runs).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

HEADER = '''"""A random DAG for benchmarks/chaos.py (seed {seed})."""

import hashlib
import os
import time

from flowlib import current, operator, workflow


def mark():
    path = os.environ.get("CHAOS_MARKS")
    if path:
        line = f"{{current.node}} {{current.run_id}} {{current.attempt}} {{os.getpid()}}\\n"
        with open(path, "a") as f:  # one short write: O_APPEND keeps lines whole
            f.write(line)


def nap(ms):
    if ms and not os.environ.get("CHAOS_FAST"):
        time.sleep(ms / 1000)


def mix(name, inputs, size=0):
    digest = hashlib.sha256("|".join([name, *inputs]).encode()).hexdigest()
    return (digest * (size // 64 + 1))[:size] if size else digest


def work(name, ms, size, inputs):
    mark()
    nap(ms)
    return mix(name, inputs, size)


def steps(name, ms, size, inputs, count):
    mark()
    saved = current.checkpoint.load()
    for step in range(0 if saved is None else saved + 1, count):
        nap(ms / count)
        current.checkpoint.save(step, step=step)
    return mix(name, inputs, size)


def spread(name, ms, inputs, count):
    mark()
    nap(ms)
    return [mix(f"{{name}}[{{i}}]", inputs) for i in range(count)]
'''


@dataclass
class Op:
    """One operator of the DAG (called once; a map's operator is called once per item)."""

    name: str
    params: list[str]
    ms: int
    retries: int = 0
    cache: bool = True
    checkpoint: int = 0  # steps of a checkpointed loop, or 0
    size: int = 0  # bytes of output (0: a 64-character digest, kept in the database)
    kind: str = "one"  # one | gather (takes a list) | spread (returns a list) | item (mapped)
    items: int = 0  # a spread's list length

    def source(self) -> str:
        options = []
        if self.retries:
            options += [f"retries={self.retries}", "retry_delay=0.05"]
        if not self.cache:
            options.append("cache=False")
        head = f"@operator({', '.join(options)})" if options else "@operator"
        kind = "list[str]" if self.kind == "gather" else "str"
        args = ", ".join(f"{p}: {kind}" for p in self.params)
        returns = "list[str]" if self.kind == "spread" else "str"
        inputs = f"[*{self.params[0]}]" if self.kind == "gather" else f"[{', '.join(self.params)}]"
        if self.kind == "spread":
            body = f"spread({self.name!r}, {self.ms}, {inputs}, {self.items})"
        elif self.checkpoint:
            body = f"steps({self.name!r}, {self.ms}, {self.size}, {inputs}, {self.checkpoint})"
        else:
            body = f"work({self.name!r}, {self.ms}, {self.size}, {inputs})"
        return f"{head}\ndef {self.name}({args}) -> {returns}:\n    return {body}\n"


@dataclass
class Dag:
    """A generated pipeline: its operators, workflow body, and the node names a run records."""

    seed: int
    ops: dict[str, Op] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # every node a run records, map items included
    outputs: list[str] = field(default_factory=list)  # the values the workflow returns

    def source(self) -> str:
        parts = [HEADER.format(seed=self.seed)]
        parts += [op.source() for op in self.ops.values()]
        returned = ", ".join(f"{name!r}: v_{name}" for name in self.outputs)
        body = "\n".join(f"    {line}" for line in self.lines)
        parts.append(f'@workflow\ndef chaos(salt: str = "s") -> dict[str, str]:\n{body}\n')
        parts[-1] += f"    return {{{returned}}}\n"
        return "\n\n".join(parts)

    def node_op(self, node: str) -> Op:
        """The operator a node runs (a map item `op[3]` runs `op`)."""
        return self.ops[node.split("[", 1)[0]]


class _Builder:
    def __init__(self, seed: int, size: int) -> None:
        self.rng = random.Random(seed)
        self.dag = Dag(seed)
        self.target = size
        self.values: list[str] = ["salt"]
        self.used: set[str] = set()

    def op(self, params: list[str], kind: str = "one", items: int = 0, light: bool = False) -> Op:
        rng = self.rng
        name = f"n{len(self.dag.ops)}"
        op = Op(name, params, ms=rng.randint(0, 300), kind=kind, items=items)
        if kind != "spread":
            op.retries = rng.choice([0, 0, 1, 2])
            op.cache = rng.random() > 0.15
            op.checkpoint = rng.choice([0, 0, 0, 0, 2, 4]) if kind != "item" else 0
            op.size = 0 if light or rng.random() > 0.25 else rng.randint(70_000, 200_000)
        self.dag.ops[name] = op
        return op

    def pick(self) -> str:
        # Prefer recent values, so the DAG grows deep as well as wide.
        value = self.rng.choice(self.values[-4:] if self.rng.random() < 0.7 else self.values)
        self.used.add(value)
        return value

    def call(self, op: Op, args: list[str]) -> str:
        self.dag.lines.append(f"v_{op.name} = {op.name}({', '.join(args)})")
        self.dag.nodes.append(op.name)
        self.values.append(f"v_{op.name}")
        return f"v_{op.name}"

    def chain(self, room: int) -> None:
        value = self.pick()
        for _ in range(min(room, self.rng.randint(2, 5))):
            value = self.call(self.op(["x"]), [value])
            self.used.add(value)
        self.used.discard(value)

    def fanout(self, room: int) -> None:
        top = self.call(self.op(["x"]), [self.pick()])
        self.used.add(top)
        legs = [self.call(self.op(["x"]), [top]) for _ in range(min(room - 2, self.rng.randint(2, 6)))]
        self.used.update(legs)
        self.call(self.op(["xs"], kind="gather"), [f"[{', '.join(legs)}]"])

    def diamond(self, room: int) -> None:
        top = self.call(self.op(["x"]), [self.pick()])
        left, right = self.call(self.op(["x"]), [top]), self.call(self.op(["x"]), [top])
        self.used.update((top, left, right))
        self.call(self.op(["a", "b"]), [left, right])

    def map(self, room: int) -> None:
        count = min(room - 3, self.rng.randint(2, 8))
        source = self.call(self.op(["x"], kind="spread", items=count), [self.pick()])
        self.values.remove(source)  # a list: only its map takes it
        item = self.op(["x"], kind="item")
        self.dag.lines.append(f"v_{item.name} = {item.name}.map({source})")
        self.dag.nodes += [item.name, *(f"{item.name}[{i}]" for i in range(count))]
        self.used.add(f"v_{item.name}")
        self.call(self.op(["xs"], kind="gather"), [f"v_{item.name}"])

    def build(self) -> Dag:
        while (room := self.target - len(self.dag.nodes)) > 0:
            motifs = [self.chain] + [self.fanout, self.diamond, self.map] * (room >= 5)
            self.rng.choice(motifs)(room)
        # the workflow returns the values nothing takes: small ones, so its outputs print short
        self.dag.outputs = [v.removeprefix("v_") for v in self.values[1:] if v not in self.used]
        for name in self.dag.outputs:
            self.dag.ops[name].size = 0
        # at least two big outputs, so the file store (disk full, corruption) always has work
        heavy = [op for op in self.dag.ops.values() if op.size]
        for op in self.rng.sample(list(self.dag.ops.values()), len(self.dag.ops)):
            if len(heavy) >= 2:
                break
            if op.kind != "spread" and not op.size and op.name not in self.dag.outputs:
                op.size = self.rng.randint(70_000, 200_000)
                heavy.append(op)
        return self.dag


def make_dag(seed: int, size: int) -> Dag:
    """A random DAG of exactly `size` nodes (map items and the map node counted), size >= 3."""
    return _Builder(seed, size).build()
