"""The run state machine: events in, commands and rows out.

It holds one run's node states and decides everything: which nodes are ready, which are
answered from the cache or reused, when a map expands and gathers, which attempts to
submit, retry, cancel or fail. It does no I/O of its own: results, worker events, timer
ticks and cancels come in as method calls with the time; what to run goes out as
`Submit` / `CancelTask` commands; what to record goes into `writes` (rows a driver
commits); cache lookups go through a `Lookups` port the driver provides.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from executors.base import Event, TaskResult
from flowlib.hashing import hash_labelled, node_key
from flowlib.plan import LiteralInput, OperatorSpec, Plan, PlanNode
from flowlib.results import DONE, FINAL, NodeStatus
from scheduler.engine import maps
from scheduler.engine.inputs import artifact, resolve
from scheduler.engine.state import FailureKind, NodeState
from scheduler.engine.writes import Writes

S = NodeStatus
_VALUES = {status: status.value for status in NodeStatus}
_NO_INFO: dict[str, Any] = {}
LOG_LIMIT = 1 << 20  # log bytes kept per attempt while it runs (the rest is dropped, marked)


_RELEASED: dict = {}  # shared by done map items (never written to)


class Lookups(Protocol):
    """What the machine asks of the world outside (the database and the artifact store)."""

    def cached(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """key -> {"outputs", "run_id", "node"} of each cache entry that exists."""

    def problem(self, outputs: Mapping[str, Any]) -> str | None:
        """Why stored outputs cannot be used (a corrupt or missing artifact, an old serializer)."""

    def elements(self, ref: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The element refs of a list output (split into elements first when stored whole)."""


@dataclass(frozen=True, slots=True)
class Submit:
    """Start an attempt: the driver sends it to `executor` once it fits."""

    task_id: str
    run_id: str
    node: str
    attempt: int
    op: OperatorSpec
    inputs: dict[str, dict[str, Any]]
    executor: str
    split: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CancelTask:
    task_id: str
    executor: str
    grace: float = 0.0  # seconds the operator has to stop by itself before it is killed


class RunMachine:
    """One run of a plan, from its first ready node to its end."""

    def __init__(
        self,
        plan: Plan,
        *,
        run_id: str,
        lookups: Lookups,
        root_run_id: str | None = None,
        default_executor: str = "local",
        use_cache: bool = True,
        fail_fast: bool = False,
        reuse: Mapping[str, dict[str, Any]] | None = None,
        reasons: Mapping[str, list[str]] | None = None,
        prior_attempts: Mapping[str, int] | None = None,
    ) -> None:
        self.plan, self.run_id, self.lookups = plan, run_id, lookups
        self.root_run_id = root_run_id or run_id  # checkpoints are kept per root run of a resume chain
        self.use_cache, self.fail_fast = use_cache, fail_fast
        self.default_executor = default_executor
        self.reuse = dict(reuse or {})
        self.reasons = reasons or {}  # a resume's reasons, for the map items it planned
        self.prior_attempts = prior_attempts or {}  # an adopted run's attempts so far, by node
        self.writes = Writes(run_id)
        self.commands: list[Submit | CancelTask] = []
        self.notices: list[tuple[str, str, dict[str, Any]]] = []  # (node, status, info) for progress
        self.states: dict[str, NodeState] = {}
        self.users: dict[str, list[str]] = {}
        self.ready: deque[str] = deque()
        self.running: dict[str, str] = {}  # task id -> node, from submit to result
        self.timers: list[tuple[float, str]] = []  # (when, node) of retries waiting out their delay
        self.computing: dict[str, str] = {}  # cache key -> the node of this run computing it
        self.waiters: dict[str, list[str]] = {}  # cache key -> nodes waiting for that computation
        self.computed: dict[str, str] = {}  # cache key -> the node of this run that computed it
        self.cancelled = False  # by the user
        self.stopping = False  # cancelled, or --fail-fast after a failure
        self.first_error: str | None = None
        self._tasks = 0
        self._fingerprints: set[str] = set()
        self._log_bytes: dict[tuple[str, int], int] = {}
        for node in plan.nodes:
            self._add(node, parent=None)
        self.ready.extend(name for name, state in self.states.items() if state.waiting == 0)

    def _add(self, node: PlanNode, parent: str | None) -> NodeState:
        op = self.plan.operators[node.op]
        state = NodeState(node, op, executor=op.executor or self.default_executor, parent=parent)
        upstream = node.upstream()
        state.waiting = len(upstream)
        state.reuse = self.reuse.get(node.name)
        state.reasons = list(self.reasons.get(node.name) or ())
        state.attempts = self.prior_attempts.get(node.name, 0)
        for name in upstream:
            self.users.setdefault(name, []).append(node.name)
        self.states[node.name] = state
        return state

    # -- progress ----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return not (self.running or self.timers or self.ready)

    def outcome(self) -> tuple[str, str | None]:
        """The run's final status and error line."""
        if self.cancelled:
            return "cancelled", self.first_error
        if all(state.status in DONE for state in self.states.values()):
            return "succeeded", None
        return "failed", self.first_error or "some nodes did not finish"

    def take_commands(self) -> list[Submit | CancelTask]:
        commands, self.commands = self.commands, []
        return commands

    def take_notices(self) -> list[tuple[str, str, dict[str, Any]]]:
        notices, self.notices = self.notices, []
        return notices

    def next_deadline(self) -> float | None:
        return self.timers[0][0] if self.timers else None

    # -- resolving ready nodes -----------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Resolve every ready node: reuse, expand or gather maps, answer from the cache, or submit."""
        while self.ready:
            batch: list[NodeState] = []
            while self.ready:
                state = self.states[self.ready.popleft()]
                if state.status is not S.PENDING or self.stopping:
                    continue
                if state.reuse is not None and self._reused(state, now):
                    continue
                if state.kind == "map":
                    self._map_step(state, now)
                    continue
                self._prepare(state)
                if state.key in self.computed and state.op.cache:
                    self._same_as(state, self.computed[state.key], now)  # type: ignore[index]
                elif self.use_cache and state.op.cache:
                    batch.append(state)
                else:
                    self._to_run(state, now)
            self._lookup(batch, now)

    def _reused(self, state: NodeState, now: float) -> bool:
        reuse = state.reuse or {}
        problem = self.lookups.problem(reuse["outputs"])
        if problem is not None:
            state.reuse = None
            self._note(state, f"not reused: {problem}; recomputed", now)
            return False
        if reuse.get("status"):  # recorded by this same run before (adopted from a server that died)
            state.status = NodeStatus(reuse["status"])
            state.outputs = dict(reuse["outputs"])
            state.key = reuse.get("cache_key")
            self._unblock(state)
            return True
        self._complete(state, dict(reuse["outputs"]), now, cached=True, reuse=reuse)
        return True

    def _prepare(self, state: NodeState) -> None:
        op = state.op
        if op.fingerprint not in self._fingerprints:
            self._fingerprints.add(op.fingerprint)
            self.writes.add(
                "fingerprints",
                {"digest": op.fingerprint, "operator": op.qualname, "data": op.fingerprint_parts},
            )
        digests = {}
        for param, value in state.node.inputs.items():
            state.input_specs[param], digests[param] = resolve(value, self.states, self._elements)
        state.input_digests = digests
        state.key = node_key(op.fingerprint, digests)

    def _elements(self, state: NodeState, output: str) -> list[dict[str, Any]]:
        ref = (state.outputs or {})[output]
        if "elements" not in ref:
            ref["elements"] = self.lookups.elements(artifact(ref))
        return ref["elements"]

    def _lookup(self, batch: list[NodeState], now: float) -> None:
        if not batch:
            return
        entries = self.lookups.cached(list(dict.fromkeys(s.key for s in batch)))  # type: ignore[misc]
        for state in batch:
            entry = entries.get(state.key)  # type: ignore[arg-type]
            problem = self.lookups.problem(entry["outputs"]) if entry is not None else None
            if entry is not None and problem is None:
                self._complete(state, dict(entry["outputs"]), now, cached=True)
                continue
            if problem is not None:
                self._note(state, f"cache entry not used: {problem}; recomputed", now)
            if state.key in self.computed:  # an earlier node of this batch computed it meanwhile
                self._same_as(state, self.computed[state.key], now)  # type: ignore[index]
            else:
                self._to_run(state, now)

    def _to_run(self, state: NodeState, now: float) -> None:
        """Submit a node, unless this run computes its key already: then it waits for that."""
        key = state.key
        # recorded now, so a resume can tell what changed even if this node fails or is interrupted
        columns = {"cache_key": key, "fingerprint": state.op.fingerprint, "inputs": state.input_digests}
        computing = self.computing.get(key) if state.op.cache and key is not None else None
        if computing is not None:
            state.same_as = computing
            self.waiters.setdefault(key, []).append(state.name)  # type: ignore[arg-type]
            self._set(state, now, status=S.QUEUED, **columns)
            return
        if state.op.cache and key is not None:
            self.computing[key] = state.name
        self._set(state, now, status=S.QUEUED, executor=state.executor, **columns)
        self._submit(state)

    def _same_as(self, state: NodeState, other: str, now: float) -> None:
        """One computation per key: take the result of the node of this run that computed it."""
        source = self.states[other]
        self._note(state, f"same computation as node '{other}' of this run", now)
        self._complete(state, dict(source.outputs or {}), now, cached=True, source=other)

    # -- maps ------------------------------------------------------------------------------------
    def _map_step(self, state: NodeState, now: float) -> None:
        node = state.node
        if state.items is None and state.key is None and state.op.cache and self._map_cached(state, now):
            return
        if state.items is None:
            if node.items is not None:
                item_inputs = list(node.items)
            else:
                source = node.inputs[node.map_param]  # type: ignore[index]
                count = len(self._elements(self.states[source.node], source.output))  # type: ignore[union-attr]
                item_inputs = maps.over_elements(node, count)
            nodes = maps.item_nodes(node, item_inputs)
            self._expand(state, nodes, now)
            if nodes:
                return
        self._gather(state, now)

    def _map_cached(self, state: NodeState, now: float) -> bool:
        """A map whose items' inputs and code are unchanged is answered whole from the cache, without
        expanding (and recording) its items. Its key: the operator, the fixed inputs, and the list
        mapped over (the upstream list's digest, or the digests of the literal items)."""
        node = state.node
        digests = {}
        for param, value in node.inputs.items():
            state.input_specs[param], digests[param] = resolve(value, self.states, self._elements)
        if node.items is not None:
            items = [
                item.digest if type(item) is LiteralInput else resolve(item, self.states, self._elements)[1]
                for item in node.items
            ]
            digests[node.map_param] = hash_labelled(["items", items])  # type: ignore[index]
        state.input_digests = digests
        state.key = hash_labelled(["map", state.op.fingerprint, ["inputs", sorted(digests.items())]])
        if not self.use_cache:
            return False
        entry = self.lookups.cached([state.key]).get(state.key)
        problem = self.lookups.problem(entry["outputs"]) if entry is not None else None
        if entry is not None and problem is None:
            self._complete(state, dict(entry["outputs"]), now, cached=True)
            return True
        if problem is not None:
            self._note(state, f"cache entry not used: {problem}; recomputed", now)
        return False

    def _expand(self, state: NodeState, nodes: list[PlanNode], now: float) -> None:
        state.items = [item.name for item in nodes]
        rows = []
        position = len(self.states)
        users = [state.name]  # one list for all items: each is used by the map alone
        for i, item in enumerate(nodes):
            child = self._add(item, parent=state.name)
            child.waiting = 0  # the map ran once all of its own upstream had, so the items may start
            child.executor = state.executor
            self.users[item.name] = users
            rows.append(self._item_row(child, position + i, S.PENDING))
            self.ready.append(item.name)
        self.writes.new_nodes.extend(rows)
        self.writes.new_edges.extend(
            [(src, item.name) for item in nodes for src in item.upstream()]
            + [(item.name, state.name) for item in nodes]
        )
        state.waiting = len(nodes)

    def _item_row(
        self, child: NodeState, position: int, status: NodeStatus, **columns: Any
    ) -> dict[str, Any]:
        return {
            "name": child.name,
            "operator": child.op.qualname,
            "status": _VALUES[status],
            "map_parent": child.parent,
            "position": position,
            "executor": child.executor,
            "reasons": self.reasons.get(child.name),
            **columns,
        }

    def _gather(self, state: NodeState, now: float) -> None:
        items = [self.states[name] for name in state.items or ()]
        for item in items:
            item.outputs = {name: artifact(ref) for name, ref in (item.outputs or {}).items()}
        outputs, manifests = maps.gather(items, state.op.fields)
        for manifest, data in manifests:
            if maps.kept_inline(manifest):
                self.writes.artifact(state.name, manifest.to_json(), now, data)
            else:
                self.writes.store_writes.append((manifest, data))
                self.writes.artifact(state.name, manifest.to_json(), now)
        cached = bool(items) and all(item.status is S.CACHED for item in items)
        if state.key is not None:
            columns = {
                "cache_key": state.key,
                "fingerprint": state.op.fingerprint,
                "inputs": state.input_digests,
            }
            self._set(state, now, **columns)
            if not cached:  # next time, the whole map is one cache hit
                self._cache_entry(state, outputs, now)
        self._complete(state, outputs, now, cached=cached, attempts=0 if cached else 1, gathered=True)

    # -- attempts ----------------------------------------------------------------------------------
    def _submit(self, state: NodeState) -> None:
        state.attempts += 1
        self._tasks += 1
        task_id = f"{self.run_id}-{self._tasks}"
        state.task_id = task_id
        self.running[task_id] = state.name
        self.writes.node(state.name, attempts=state.attempts)
        self.commands.append(
            Submit(
                task_id,
                self.run_id,
                state.name,
                state.attempts,
                state.op,
                state.input_specs,
                state.executor,
                state.node.split,
            )
        )

    def on_event(self, task_id: str, event: Event, now: float) -> None:
        """Something a running attempt reported: its start, a metric, a checkpoint, log lines."""
        name = self.running.get(task_id)
        if name is None:
            return
        state = self.states[name]
        data = dict(event.data)
        if event.kind == "started":
            if state.status is S.QUEUED:
                started = data.get("time", event.time)
                state.started_at = state.started_at or started
                self._set(state, now, status=S.RUNNING, started_at=state.started_at)
            return
        if event.kind == "log":
            self._log_chunk(state, data, now)
            return
        attempt = state.attempts
        if event.kind == "metric":
            self.writes.add(
                "metrics",
                {
                    "run_id": self.run_id,
                    "node": name,
                    "attempt": attempt,
                    "name": data["name"],
                    "value": data["value"],
                    "step": data.get("step"),
                    "time": data.get("time", event.time),
                },
            )
        elif event.kind == "checkpoint":
            self.writes.add(
                "checkpoints",
                {
                    "root_run_id": self.root_run_id,
                    "node": name,
                    "run_id": self.run_id,
                    "attempt": attempt,
                    "step": data.get("step"),
                    "digest": data["digest"],
                    "time": event.time,
                },
            )
            ref = {k: data[k] for k in ("digest", "serializer", "serializer_version", "size") if k in data}
            ref.setdefault("serializer", "checkpoint")
            ref.setdefault("serializer_version", 0)
            ref.setdefault("size", 0)
            self.writes.artifact(name, ref, now)
        self.writes.event(name, event.kind, data, now)

    def _log_chunk(self, state: NodeState, data: dict[str, Any], now: float) -> None:
        key = (state.name, state.attempts)
        text = data.get("text", "")
        used = self._log_bytes.get(key, 0)
        if used >= LOG_LIMIT:
            return
        if used + len(text) > LOG_LIMIT:
            text = text[: LOG_LIMIT - used] + "\n[... log cut at 1 MiB while running; the end follows ...]\n"
        self._log_bytes[key] = used + len(text)
        self.writes.add(
            "log_chunks",
            {"run_id": self.run_id, "node": state.name, "attempt": state.attempts, "text": text, "time": now},
        )

    def on_result(self, task_id: str, result: TaskResult, now: float) -> None:
        name = self.running.pop(task_id, None)
        if name is None:
            return
        state = self.states[name]
        self._log_bytes.pop((name, state.attempts), None)
        self.writes.add(
            "attempts",
            {
                "run_id": self.run_id,
                "node": name,
                "number": state.attempts,
                "status": "succeeded" if result.ok else "failed",
                "started_at": result.started_at,
                "ended_at": result.ended_at or now,
                "host": result.host,
                "pid": result.pid,
                "exit_code": result.exit_code,
                "signal": result.signal,
                "error": result.error,
                "log": result.log,
            },
        )
        if state.status not in (S.QUEUED, S.RUNNING):
            return  # cancelled meanwhile
        if state.started_at is None:
            state.started_at = result.started_at
        if state.status is S.QUEUED and result.started_at is not None:
            # a quick attempt ends before its worker says it started: its start goes in the log now
            self.writes.state(name, _VALUES[S.RUNNING], result.started_at)
            self.writes.node(name, started_at=state.started_at)
        duration = (result.ended_at or now) - (result.started_at or now)
        if result.ok:
            outputs = {}
            for output, ref in result.outputs.items():
                ref = dict(ref)
                blobs = ref.pop("inline", None) or {}
                for digest, data in blobs.items():
                    shown = ref if digest == ref["digest"] else _inline_ref(digest, data, ref)
                    self.writes.artifact(name, artifact(shown), now, data)
                if ref["digest"] not in blobs:
                    self.writes.artifact(name, artifact(ref), now)
                outputs[output] = ref
            self._complete(state, outputs, now, cached=False, host=result.host, duration=duration)
            return
        error = result.error or {"type": "Error", "message": "failed", "traceback": None}
        state.error = error
        kind = FailureKind.of(error)
        if state.attempts <= state.op.retries and not self.stopping and kind.retryable:
            delay = state.op.retry_delay * (2 ** (state.attempts - 1)) * (1 + random.uniform(0, 0.25))
            heapq.heappush(self.timers, (now + delay, name))
            self._set(state, now, status=S.QUEUED, error=error)
            self.writes.event(
                name, "retry", {"attempt": state.attempts, "delay_s": delay, "error": error}, now
            )
            info = {"attempt": state.attempts + 1, "of": state.op.retries + 1, "error": error}
            self.notices.append((name, "retrying", info))
            return
        self._fail(state, error, now, host=result.host, duration=duration)

    def on_tick(self, now: float) -> None:
        """Retries whose delay is over are submitted again."""
        while self.timers and self.timers[0][0] <= now:
            _, name = heapq.heappop(self.timers)
            if not self.stopping:
                self._submit(self.states[name])

    # -- outcomes ------------------------------------------------------------------------------------
    def _complete(
        self,
        state: NodeState,
        outputs: dict[str, Any],
        now: float,
        *,
        cached: bool,
        host: str | None = None,
        reuse: Mapping[str, Any] | None = None,
        source: str | None = None,
        attempts: int | None = None,
        duration: float | None = None,
        gathered: bool = False,
    ) -> None:
        state.outputs = outputs
        stored = {name: artifact(ref) for name, ref in outputs.items()}
        columns: dict[str, Any] = {
            "status": S.CACHED if cached else S.SUCCEEDED,
            "cached": cached,
            "outputs": stored,
            "ended_at": now,
            "duration_s": 0.0 if cached or duration is None else round(duration, 6),
            "attempts": (0 if cached else state.attempts) if attempts is None else attempts,
            "error": None,
        }
        if reuse is not None:
            columns.update(
                cache_key=reuse.get("cache_key"),
                fingerprint=reuse.get("fingerprint"),
                inputs=reuse.get("inputs"),
            )
        elif state.key is not None and cached:  # a computed node recorded its key when it was queued
            columns.update(cache_key=state.key, fingerprint=state.op.fingerprint, inputs=state.input_digests)
        if host:
            columns["host"] = host
        self._set(state, now, **columns)
        if not cached and state.key is not None and not gathered:
            self.computed[state.key] = state.name
            if state.op.cache:
                self._cache_entry(state, outputs, now)
        self._unblock(state)
        self._release_waiters(state, now)
        if state.parent is not None:  # a done map item: what it was sent is not needed any more
            state.input_specs = state.input_digests = _RELEASED

    def _unblock(self, state: NodeState) -> None:
        """A node is done: its dependants that waited only for it become ready."""
        for user in self.users.get(state.name, ()):
            child = self.states[user]
            child.waiting -= 1
            if child.waiting == 0 and child.status is S.PENDING:
                self.ready.append(user)
                self.writes.urgent = True  # the child may run only once this completion is committed

    def _cache_entry(self, state: NodeState, outputs: dict[str, Any], now: float) -> None:
        stored = {name: artifact(ref) for name, ref in outputs.items()}
        serializers = {n: [r["serializer"], r["serializer_version"]] for n, r in stored.items()}
        self.writes.add(
            "cache",
            {
                "key": state.key,
                "operator": state.op.qualname,
                "fingerprint": state.op.fingerprint,
                "inputs": state.input_digests,
                "outputs": stored,
                "serializers": serializers,
                "created_at": now,
                "run_id": self.run_id,
                "node": state.name,
            },
        )

    def _release_waiters(self, state: NodeState, now: float) -> None:
        if state.key is None or self.computing.get(state.key) != state.name:
            return
        del self.computing[state.key]
        for name in self.waiters.pop(state.key, ()):
            waiter = self.states[name]
            if waiter.status is not S.QUEUED:
                continue
            waiter.status = S.PENDING
            if state.status in DONE:
                self._same_as(waiter, state.name, now)
            else:
                error = dict(state.error or {})
                error["message"] = (
                    f"the same computation (node '{state.name}') failed: {error.get('message')}"
                )
                self._fail(waiter, error, now)

    def _fail(
        self,
        state: NodeState,
        error: dict[str, Any],
        now: float,
        *,
        host: str | None = None,
        duration: float | None = None,
    ) -> None:
        state.error = error
        columns: dict[str, Any] = {
            "status": S.FAILED,
            "error": error,
            "ended_at": now,
            "attempts": state.attempts,
        }
        if duration is not None:
            columns["duration_s"] = round(duration, 6)
        if host:
            columns["host"] = host
        self._set(state, now, **columns)
        if self.first_error is None:
            self.first_error = f"node '{state.name}' failed: {error.get('type')}: {error.get('message')}"
        self._cascade(state.name, now)
        self._release_waiters(state, now)
        if self.fail_fast:
            self.cancel("--fail-fast: a node failed", now, by_user=False)

    def _cascade(self, name: str, now: float) -> None:
        error = {"type": "UpstreamFailed", "message": f"upstream node '{name}' failed", "traceback": None}
        stack = list(self.users.get(name, ()))
        while stack:
            child = self.states[stack.pop()]
            if child.status in (S.PENDING, S.QUEUED) and child.same_as is None:
                self._set(child, now, status=S.UPSTREAM_FAILED, error=error)
                stack.extend(self.users.get(child.name, ()))

    def cancel(self, why: str, now: float, *, by_user: bool = True, grace: float = 0.0) -> None:
        """Stop everything still to do; the run ends cancelled (or failed, under --fail-fast).
        With `grace`, running operators are asked to stop first (see executors.stopping)."""
        if self.stopping:
            return
        self.stopping = True
        self.cancelled = by_user
        self.first_error = self.first_error or f"cancelled: {why}"
        for task_id, name in self.running.items():
            self.commands.append(CancelTask(task_id, self.states[name].executor, grace))
        self.running.clear()
        self.timers.clear()
        self.ready.clear()
        error = {"type": "Cancelled", "message": why, "traceback": None}
        for state in self.states.values():
            if state.status not in FINAL:
                self._set(state, now, status=S.CANCELLED, error=error, ended_at=now)

    def abort(self, error: str, now: float) -> None:
        """An internal error: stop every attempt and leave nothing unfinished."""
        self.cancel(f"internal error: {error}", now, by_user=False)
        self.first_error = f"internal error: {error}"

    # -- recording -------------------------------------------------------------------------------------
    def _set(self, state: NodeState, now: float, status: NodeStatus | None = None, **columns: Any) -> None:
        if status is not None:
            state.status = status
            value = _VALUES[status]  # the plain string: an enum member's .value is a slow property
            columns["status"] = value
            self.writes.changes.append((state.name, value, now))
            self.notices.append((state.name, value, _NO_INFO))
        self.writes.node(state.name, **columns)

    def _note(self, state: NodeState, reason: str, now: float) -> None:
        """Record why a node did something unusual, in its `reasons` and the event log."""
        state.reasons.append(reason)
        self.writes.node(state.name, reasons=list(state.reasons))
        self.writes.event(state.name, "note", {"reason": reason}, now)


def _inline_ref(digest: str, data: bytes, output: Mapping[str, Any]) -> dict[str, Any]:
    """The ref of an element of a split list kept inline (its serializer is in the elements)."""
    for element in output.get("elements") or ():
        if element["digest"] == digest:
            return element
    return {"digest": digest, "serializer": "inline", "serializer_version": 0, "size": len(data)}
