"""A `Distributed(nnodes=N)` attempt on Ray: N distinct nodes reserved at once, one Ray task each.

A STRICT_SPREAD placement group of N bundles (one node's share each) is all or
nothing: until Ray can reserve every bundle the group waits and nothing starts.
Node 0's task starts first and reports its node's address and a free port; the
other nodes start pointed at it. When one node fails, the others are stopped,
and removing the placement group kills whatever still runs in it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from executors.base import Event, EventSink, TaskResult, TaskSpec
from executors.distributed import GANG_GRACE_S, RENDEZVOUS, combine, consequent, node_spec

Launch = Callable[[TaskSpec, EventSink, dict[str, Any]], Future]
Stop = Callable[[str, str, str], None]
_LOST = {"WorkerDied", "OutOfMemory"}  # how Ray reports a node (or its worker) that went away


def _bundle(options: dict[str, Any]) -> dict[str, float]:
    """The placement-group bundle that holds one node's task with these Ray options."""
    bundle = {"CPU": options["num_cpus"], "GPU": options["num_gpus"], "memory": options["memory"] or 0}
    bundle.update(options["resources"])
    bundle = {name: amount for name, amount in bundle.items() if amount}
    return bundle or {"CPU": 0.01}


class RayGang:
    """Runs one multi-node attempt on its own thread and resolves `future` with its result."""

    def __init__(
        self,
        spec: TaskSpec,
        on_event: EventSink,
        future: Future[TaskResult],
        launch: Launch,
        stop: Stop,
        options: dict[str, Any],
    ) -> None:
        self.spec, self.on_event, self.future = spec, on_event, future
        self.launch, self.stop = launch, stop
        self.options = options
        if "CPU" not in _bundle(options):
            self.options = {**options, "num_cpus": 0.01}
        self.n = spec.distributed.nnodes  # type: ignore[union-attr]
        self.lock = threading.Lock()
        self.stopped: tuple[str, str] | None = None  # cancelled from outside: the attempt ends so
        self.closed = False  # no node starts any more
        self.rendezvous: Future[dict[str, Any]] = Future()
        self.nodes: dict[int, Future[TaskResult]] = {}
        self.thread = threading.Thread(target=self._run, name="flowlib-ray-gang", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def cancel(self, kind: str, message: str) -> None:
        """Stop every node; the attempt ends as `kind` (a cancel, a shutdown)."""
        with self.lock:
            self.stopped = self.stopped or (kind, message)
        self._stop_all(kind, message)

    def _stop_all(self, kind: str, message: str) -> None:
        with self.lock:
            self.closed = True
            launched = list(self.nodes)
        for k in launched:  # a node that ended already is not touched
            self.stop(f"{self.spec.task_id}/node{k}", kind, message)
        if not self.rendezvous.done():
            self.rendezvous.set_exception(RuntimeError(message))

    def _sink(self, node: int) -> EventSink:
        def forward(event: Event) -> None:
            if event.kind == RENDEZVOUS:
                if node == 0 and not self.rendezvous.done():
                    self.rendezvous.set_result(dict(event.data))
                return
            self.on_event(Event(self.spec.task_id, event.kind, event.data, event.time))

        return forward

    def _node(self, k: int, addr: str, port: int | None, group: Any) -> bool:
        """Start node k in bundle k; False when the gang was stopped meanwhile."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=k)
        with self.lock:
            if self.closed:
                return False
            spec = node_spec(self.spec, k, addr, port)
            self.nodes[k] = self.launch(
                spec, self._sink(k), {**self.options, "scheduling_strategy": strategy}
            )
        return True

    def _run(self) -> None:
        from ray.util.placement_group import placement_group, remove_placement_group

        started = time.time()
        group = placement_group([_bundle(self.options)] * self.n, strategy="STRICT_SPREAD")
        results: dict[int, TaskResult] = {}
        where = [f"Ray bundle {k}" for k in range(self.n)]
        try:
            while not group.wait(timeout_seconds=1):  # all or nothing: wait until every node is free
                if self.closed:
                    break
            started = time.time()
            where = _nodes_of(group, self.n) or where
            if self._node(0, "", None, group):
                wait([self.nodes[0], self.rendezvous], return_when=FIRST_COMPLETED)
                if self.rendezvous.done() and self.rendezvous.exception() is None:
                    there = self.rendezvous.result()
                    for k in range(1, self.n):
                        self._node(k, str(there["addr"]), int(there["port"]), group)
                results = self._supervise()
        finally:
            self._stop_all("Cancelled", "another node of the group failed")
            remove_placement_group(group)  # kills what still runs in it
        self.future.set_result(self._result(results, where, started))

    def _supervise(self) -> dict[int, TaskResult]:
        """Wait for every node; after a failure, only as long as it takes to learn its cause."""
        deadline: float | None = None
        while True:
            with self.lock:
                if self.closed:
                    return {}
                nodes = dict(self.nodes)
            ended = {k: f.result() for k, f in nodes.items() if f.done()}
            failed = [r for r in ended.values() if not r.ok]
            if len(ended) == len(nodes) or any(not consequent(r.error) for r in failed):
                return ended
            if failed and deadline is None:
                deadline = time.monotonic() + GANG_GRACE_S
            if deadline is not None and time.monotonic() >= deadline:
                return ended
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait([f for f in nodes.values() if not f.done()], timeout=timeout, return_when=FIRST_COMPLETED)

    def _result(self, ended: dict[int, TaskResult], where: list[str], started: float) -> TaskResult:
        if self.stopped is not None:
            return TaskResult.failure(self.spec.task_id, *self.stopped, started_at=started)
        lost = [r for r in ended.values() if not r.ok and r.error and r.error.get("type") in _LOST]
        gone = {id(r) for r in lost}
        nodes = [None if id(ended.get(k)) in gone else ended.get(k) for k in range(self.n)]
        return combine(self.spec, nodes, where, lost, started)


def _nodes_of(group: Any, n: int) -> list[str] | None:
    """'Ray node IP (id)' of each bundle of a ready placement group."""
    try:
        import ray
        from ray.util import placement_group_table

        table = placement_group_table(group)
        ids = table.get("bundles_to_node_id") or {}
        address = {node["NodeID"]: node.get("NodeManagerAddress", "?") for node in ray.nodes()}
        return [f"Ray node {address.get(ids.get(k), '?')} ({str(ids.get(k, ''))[:8]})" for k in range(n)]
    except Exception:
        return None
