"""A `Distributed(nnodes=N)` attempt over N connected `ssh` hosts, reserved together beforehand.

Ship code and inputs to every host; start node 0 and wait for the port it
reports; then start the other nodes pointed at node 0's host. When a rank fails
or a host drops, every node is stopped (each host's watcher kills its process
group) before the attempt ends, so nothing is left running anywhere. Outputs come
from node 0's host; each host's newer checkpoint comes back too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import asyncssh

from executors.base import Event, EventSink, TaskResult, TaskSpec
from executors.distributed import GANG_GRACE_S, RENDEZVOUS, combine, consequent, node_spec
from executors.ssh_hosts import Host, describe
from executors.ssh_process import RemoteRun
from executors.ssh_transfer import Transfer

log = logging.getLogger("flowlib.executors.ssh")

_LOST = (asyncssh.Error, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError)


class _Gang:
    def __init__(
        self,
        spec: TaskSpec,
        placed: Sequence[tuple[Host, list[int]]],
        on_event: EventSink,
        python: str,
        mark_down: Callable[[Host, str], None],
    ) -> None:
        self.spec, self.placed, self.on_event = spec, placed, on_event
        self.python, self.mark_down = python, mark_down
        self.hosts = [host for host, _ in placed]
        n = len(placed)
        self.results: list[TaskResult | None] = [None] * n
        self.lost: list[TaskResult] = []
        self.rendezvous: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.started = time.time()

    def spec_for(self, node: int, port: int | None) -> TaskSpec:
        spec = node_spec(self.spec, node, self.hosts[0].hostname, port)
        ids = self.placed[node][1]
        if ids:
            spec = replace(spec, env={**spec.env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, ids))})
        return spec

    def sink(self, node: int) -> EventSink:
        def forward(event: Event) -> None:
            if event.kind == RENDEZVOUS:
                if node == 0 and not self.rendezvous.done():
                    self.rendezvous.set_result(int(event.data["port"]))
                return
            self.on_event(Event(self.spec.task_id, event.kind, event.data, event.time))

        return forward

    async def node(self, node: int, shipped: tuple[TaskSpec, list[str]], port: int | None) -> None:
        """Run node `node` to its end (or until cancelled); record its result or its host's loss."""
        host = self.hosts[node]
        remote, sys_path = shipped
        if port is not None:
            remote = replace(remote, env={**remote.env, "MASTER_PORT": str(port)})
        run = None
        try:
            run = await RemoteRun.start(host, self.python, remote, sys_path)
            self.results[node] = await run.result(self.sink(node), remote.task_id, self.started)
        except _LOST as exc:
            if host.connected():
                message = f"ssh host {host.label}: {describe(exc)}"
                self.results[node] = TaskResult.failure(remote.task_id, "SshError", message, host=host.label)
            else:
                message = f"ssh host {host.label} dropped during the attempt: {describe(exc)}"
                self.lost.append(
                    TaskResult.failure(self.spec.task_id, "HostDropped", message, host=host.label)
                )
                self.mark_down(host, f"ssh host {host.label} dropped")
        finally:
            if run is not None:
                await asyncio.shield(run.stop())

    def stop_now(self) -> bool:
        """Whether what ended so far decides the attempt: a rank's own error, or a lost host."""
        failed = [r for r in self.results if r is not None and not r.ok]
        return bool(self.lost) or any(not consequent(r.error) for r in failed)

    async def supervise(self, running: set[asyncio.Task]) -> None:
        """Wait for every node; after a failure, only as long as it takes to learn its cause."""
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while running:
            wait = None if deadline is None else max(0.0, deadline - loop.time())
            done, running = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if not done or self.stop_now():
                return
            if deadline is None and any(r is not None and not r.ok for r in self.results):
                deadline = loop.time() + GANG_GRACE_S  # a peer's connection error: its cause is on its way


async def run_gang(
    spec: TaskSpec,
    placed: Sequence[tuple[Host, list[int]]],
    on_event: EventSink,
    transfer: Transfer,
    python: str,
    mark_down: Callable[[Host, str], None],
) -> TaskResult:
    """Run one multi-node attempt on the `placed` hosts (host, its GPU ids), node k on host k."""
    gang = _Gang(spec, placed, on_event, python, mark_down)
    hosts = gang.hosts
    since = await transfer.local_ref(spec)
    shipped = await asyncio.gather(
        *(transfer.ship(host, gang.spec_for(k, None), node=k) for k, host in enumerate(hosts))
    )
    running: set[asyncio.Task] = set()
    try:
        first = asyncio.ensure_future(gang.node(0, shipped[0], None))
        running.add(first)
        await asyncio.wait([first, gang.rendezvous], return_when=asyncio.FIRST_COMPLETED)
        if gang.rendezvous.done():
            port = gang.rendezvous.result()
            for k in range(1, len(hosts)):
                running.add(asyncio.ensure_future(gang.node(k, shipped[k], port)))
            await gang.supervise(set(running))
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=15)
    for k in reversed(range(len(hosts))):  # node 0's checkpoint last: it wins a tie
        result = gang.results[k]
        if not hosts[k].connected():
            continue
        try:
            await transfer.fetch(
                hosts[k], spec, result if k == 0 and result and result.ok else None, k, since
            )
        except _LOST as exc:
            log.warning(
                "could not fetch node %d's files from ssh host %s: %s", k, hosts[k].label, describe(exc)
            )
    where = [f"ssh host {host.label}" for host in hosts]
    return combine(spec, gang.results, where, gang.lost, gang.started)
