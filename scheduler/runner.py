"""The dispatch loop of one run: event-driven, committed in batches, crash-safe.

Ready nodes are resolved against the cache or sent to their executor within its
capacity; results arrive in one inbox. Each loop step writes everything it
learned in one transaction, and only then dispatches what became ready, so a
success is always committed before anything downstream of it starts. Executors
that can hold a task get it just before that commit, to load it and its inputs
meanwhile, and start it once released, after the commit.
"""

from __future__ import annotations

import gc
import heapq
import os
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from executors.base import Drivable, Event, Executor, Holding, TaskResult
from flowlib import serializers
from flowlib.dag import DAG
from flowlib.hashing import node_key
from flowlib.results import DONE, FINAL
from flowlib.store import MANIFEST
from scheduler import maps
from scheduler.capacity import Capacity
from scheduler.drivers.inbox import Inbox
from scheduler.recorder import Recorder
from scheduler.store import repository as repo
from scheduler.store.batch import Batch
from scheduler.store.blobs import Blobs
from scheduler.tasks import Fingerprints, NodeState, input_spec, task_spec

HEARTBEAT_S = 2.0
KEEP_AFTER_RUN = 32 * 1024 * 1024  # bytes of small artifacts a run's result may hold on to
FLUSH_EVERY_S = 0.5  # the longest a completion waits for its commit when nothing forces one
SPIN_S = 0.002  # how long the scheduler polls for a result before it sleeps (see Inbox.wait)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
Progress = Callable[[str, str, dict[str, int]], None]


class RunScheduler:
    """Runs one recorded run of a DAG to its end."""

    def __init__(
        self,
        dag: DAG,
        *,
        run_id: str,
        root_run_id: str,
        engine: Engine,
        store: Any,
        executors: dict[str, Executor],
        default_executor: str,
        fingerprints: Fingerprints,
        use_cache: bool = True,
        fail_fast: bool = False,
        max_parallel: int | None = None,
        fsync: bool = True,
        progress: Progress | None = None,
        blobs: Blobs | None = None,
    ) -> None:
        self.dag, self.run_id, self.root_run_id = dag, run_id, root_run_id
        self.engine, self.store, self.executors = engine, store, executors
        self.default_executor, self.fingerprints = default_executor, fingerprints
        self.use_cache, self.fail_fast, self.max_parallel, self.fsync = (
            use_cache,
            fail_fast,
            max_parallel,
            fsync,
        )
        self.progress = progress
        self.blobs = blobs if blobs is not None else Blobs()
        self.blobs.engine = engine
        self.states: dict[str, NodeState] = {}
        self.users: dict[str, list[str]] = {}
        # executors whose loop runs on this thread, in _wait: their results come without a thread
        # hop (not beside one that runs tasks on this thread: a pool's timeouts would wait for them)
        self.driven: list[Any] = []
        if not any(executor.runs_in_submit for executor in executors.values()):
            self.driven = [e for e in executors.values() if isinstance(e, Drivable)]
        for executor in self.driven:
            executor.drive_here()
        self.holding = {name for name, executor in executors.items() if isinstance(executor, Holding)}
        self.ready: deque[str] = deque()
        self.capacity = Capacity(executors)
        # per executor, FIFO: a node that does not fit yet holds back the ones behind it
        self.dispatchable: dict[str, deque[str]] = {name: deque() for name in executors}
        self.running: dict[str, str] = {}  # task id -> node name
        self.timers: list[tuple[float, str]] = []
        self.cancelled = False  # by the user: Ctrl-C or `flow cancel`
        self.stopping = False  # cancelled, or --fail-fast after a failure
        self.first_error: str | None = None
        self.batch = Batch(engine, run_id)
        self.record = Recorder(self.batch, self.blobs, run_id, root_run_id)
        self._tasks_submitted = 0
        self._must_flush = False
        self._flushed_at = time.monotonic()

    # -- set-up -------------------------------------------------------------------------------
    def attach(
        self,
        node_ids: dict[str, int],
        reuse: dict[str, dict[str, Any]] | None = None,
        reasons: dict[str, list[str]] | None = None,
    ) -> None:
        """Take the recorded node ids; `reuse` maps node name -> the outputs a resume keeps,
        `reasons` node name -> the reasons recorded with it (a resume's plan)."""
        self.users = self.dag.downstream()
        for name, node in self.dag.nodes.items():
            state = NodeState(node, node_ids[name], waiting=len(node.upstream()))
            state.executor = node.operator.executor or self.default_executor
            if reuse and name in reuse:
                state.reuse = reuse[name]
            state.reasons = list((reasons or {}).get(name) or [])
            self.states[name] = state
        self.ready.extend(name for name, state in self.states.items() if state.waiting == 0)

    # -- the loop ---------------------------------------------------------------------------------
    def execute(self) -> str:
        # The DAG and node states live for the whole run: kept out of the cyclic collector's
        # full passes, which otherwise walk all of them again and again (~10 % of a 10,000-node run).
        gc.freeze()
        self.inbox = Inbox()
        beat = threading.Thread(target=self._heartbeat, name="flowlib-heartbeat", daemon=True)
        self._beating = True
        beat.start()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            while True:
                self._advance()
                if (
                    self._must_flush
                    or time.monotonic() - self._flushed_at >= FLUSH_EVERY_S
                    or not self.running
                ):
                    held = self._dispatch(held=True) if not self.stopping else {}
                    self._flush()  # before any start that depends on a completion
                    for name, task_ids in held.items():
                        self.executors[name].release(task_ids)  # type: ignore[attr-defined]
                if not self.stopping:
                    self._dispatch()
                if (
                    not self.running
                    and not self.timers
                    and not self.ready
                    and not any(self.dispatchable.values())
                ):
                    break
                self._wait()
        except KeyboardInterrupt:
            self._cancel_all("interrupted (Ctrl-C)")
            self._flush()
        finally:
            self._beating = False
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            gc.unfreeze()
            self.batch.stop()
            self.inbox.close()
            # the newest small artifacts (the outputs among them) stay for reading the result
            self.blobs.shrink(KEEP_AFTER_RUN)
        return self._finish()

    def _on_sigint(self, _signum: int, _frame: Any) -> None:
        if self.stopping:
            raise KeyboardInterrupt  # a second Ctrl-C stops waiting for the cancellation
        self.inbox.put(("cancel", "interrupted (Ctrl-C)"))

    def _wait(self) -> None:
        deadlines = [self.timers[0][0]] if self.timers else []
        if self.batch:
            deadlines.append(self._flushed_at + FLUSH_EVERY_S)
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        for executor in self.driven:
            wanted = executor.loop_timeout()
            if wanted is not None:
                timeout = wanted if timeout is None else min(timeout, wanted)
        # spin only where a core is left over: then the scheduler, not a worker, is what waits
        spin = SPIN_S if self.driven and 0 < len(self.running) < CORES else 0.0
        ready = self.inbox.wait(timeout, [handle for e in self.driven for handle in e.loop_handles()], spin)
        for executor in self.driven:
            executor.serve(ready)
        messages = self.inbox.take()
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, name = heapq.heappop(self.timers)
            if not self.stopping:
                self._enqueue(self.states[name])
        for message in messages:
            kind = message[0]
            if kind == "result":
                self._on_result(message[1], message[2])
            elif kind == "event":
                self._on_event(message[1], message[2])
            elif kind == "cancel":
                self._cancel_all(message[1])

    # -- resolving ready nodes --------------------------------------------------------------------
    def _advance(self) -> None:
        """Resolve ready nodes: reuse, expand or gather maps, answer from cache, or queue to run."""
        while self.ready:
            batch: list[NodeState] = []
            while self.ready:
                name = self.ready.popleft()
                state = self.states[name]
                if state.status != "pending" or self.stopping:
                    continue
                if state.reuse is not None:
                    problem = self._unusable(state.reuse["outputs"])
                    if problem is None:
                        self._record_reused_items(state, state.reuse.get("items") or [])
                        self._complete(state, state.reuse["outputs"], cached=True, reuse=state.reuse)
                        continue
                    state.reuse = None
                    self.record.note(state, f"not reused: {problem}; recomputed")
                if state.node.kind == "map":
                    self._map_step(state)
                else:
                    self._prepare(state)
                    batch.append(state)
            self._lookup_cache(batch)

    def _prepare(self, state: NodeState) -> None:
        fingerprint = self.fingerprints.of(state.node.operator)
        state.fingerprint = fingerprint.digest
        self.record.fingerprint(
            fingerprint.digest, fingerprint.qualname, self.fingerprints.json_of(state.node.operator)
        )
        digests = {}
        for param, value in state.node.inputs.items():
            state.input_specs[param], digests[param] = input_spec(value, self.states)
        state.input_digests = digests
        state.key = node_key(fingerprint.digest, digests)

    def _lookup_cache(self, batch: list[NodeState]) -> None:
        if not batch:
            return
        wanted = [s for s in batch if self.use_cache and s.node.operator.cache]
        entries: dict[str, dict[str, Any]] = {}
        if wanted:
            with self.batch.transaction() as conn:
                found = repo.find_cache_entries(conn, [s.key for s in wanted if s.key], ("outputs",))
                entries = {key: row.outputs for key, row in found.items()}
        self.blobs.get_many(
            [d for outputs in entries.values() for ref in outputs.values() for d in ref.get("inline") or ()]
        )
        for state in batch:
            outputs = entries.get(state.key or "")
            problem = self._unusable(outputs) if outputs is not None else None
            if outputs is not None and problem is None:
                self._complete(state, outputs, cached=True)
                continue
            if problem is not None:
                self.record.note(state, f"cache entry not used: {problem}; recomputed")
            # recorded now, so a resume can tell what changed even if this node fails or is interrupted
            self.record.set(
                state,
                status="queued",
                cache_key=state.key,
                fingerprint=state.fingerprint,
                inputs=state.input_digests,
            )
            self._enqueue(state)

    def _unusable(self, outputs: dict[str, Any]) -> str | None:
        """Why stored outputs cannot be used (a corrupt or missing artifact, an old serializer), else None."""
        for ref in outputs.values():
            name, version = ref.get("serializer"), ref.get("serializer_version")
            if name != MANIFEST and serializers.get(name).version != version:
                return f"written by serializer {name} version {version}"
            inline = set(ref.get("inline") or ())
            for digest in [ref["digest"], *(ref.get("elements") or ())]:
                if not (self.blobs.intact(digest) if digest in inline else self.store.verify(digest)):
                    return f"artifact {digest[:12]} is corrupt or missing"
        return None

    # -- maps -----------------------------------------------------------------------------------------
    def _map_step(self, state: NodeState) -> None:
        node = state.node
        if node.items is not None:
            items = [self.states[name] for name in node.items]
            outputs, cached = maps.gather(node.name, items, self.store, self.record)
            self._complete(state, outputs, cached=cached, attempts=0 if cached else 1)
            return
        items = maps.expand(node, self.states, self.store, self.blobs)
        source = node.inputs[node.map_param].node  # type: ignore[index, union-attr]
        rows = maps.item_rows(
            [{"name": item.name, "operator": item.operator.qualname} for item in items],
            state,
            len(self.states),
            status="pending",
        )
        edges = [(source, item.name) for item in items] + [(item.name, node.name) for item in items]
        self._flush()
        with self.batch.transaction() as conn:
            ids = repo.add_nodes(conn, self.run_id, rows, edges)
        node.items = [item.name for item in items]
        state.waiting = len(items)
        for item in items:
            self.dag.nodes[item.name] = item
            self.states[item.name] = NodeState(item, ids[item.name], executor=state.executor)
            self.users[item.name] = [node.name]
            self.ready.append(item.name)
        if not items:
            self.ready.append(node.name)

    def _record_reused_items(self, state: NodeState, items: list[dict[str, Any]]) -> None:
        """A reused map over a future keeps its items, recorded as cached in the new run."""
        if not items:
            return
        rows = maps.item_rows(
            items, state, len(self.states), status="cached", cached=True, attempts=0, duration_s=0.0
        )
        self._flush()
        with self.batch.transaction() as conn:
            repo.add_nodes(conn, self.run_id, rows, [(item["name"], state.node.name) for item in items])

    # -- dispatch -----------------------------------------------------------------------------------------
    def _enqueue(self, state: NodeState) -> None:
        self.dispatchable[state.executor].append(state.node.name)  # type: ignore[index]

    def _dispatch(self, *, held: bool = False) -> dict[str, list[str]]:
        """Submit what fits; with `held`, only to executors that can hold tasks, and return the
        task ids submitted by executor (they start once released)."""
        submitted: dict[str, list[str]] = {}
        for executor, waiting in self.dispatchable.items():
            if held and executor not in self.holding:
                continue
            while waiting:
                if self.max_parallel and len(self.running) >= self.max_parallel:
                    return submitted
                state = self.states[waiting[0]]
                if state.status not in ("queued", "pending"):
                    waiting.popleft()
                    continue
                if not self.capacity.fits(state.executor, state.node.operator):  # type: ignore[arg-type]
                    break
                waiting.popleft()
                submitted.setdefault(executor, []).append(self._submit(state, held=held))
        return submitted

    def _submit(self, state: NodeState, *, held: bool = False) -> str:
        node = state.node
        state.attempts += 1
        self._tasks_submitted += 1
        task_id = f"{self.run_id}-{self._tasks_submitted}"
        spec = task_spec(
            state,
            task_id,
            run_id=self.run_id,
            root_run_id=self.root_run_id,
            fingerprints=self.fingerprints,
            blobs=self.blobs,
            store_url=self.store.url,
            fsync=self.fsync,
        )
        self.capacity.take(state.executor, node.operator)  # type: ignore[arg-type]
        state.task_id, state.started_at = task_id, time.time()
        state.first_started_at = state.first_started_at or state.started_at
        self.running[task_id] = node.name
        self.record.set(
            state,
            status="running",
            attempts=state.attempts,
            started_at=state.first_started_at,
            executor=state.executor,
        )
        self._notify(node.name, "running")

        def on_event(event: Event, _name: str = node.name, _attempt: int = state.attempts) -> None:
            self.inbox.put(("event", _name, (event, _attempt)))

        executor: Any = self.executors[state.executor]  # type: ignore[index]
        future = executor.submit_held(spec, on_event) if held else executor.submit(spec, on_event)
        future.add_done_callback(lambda f, _id=task_id: self.inbox.put(("result", _id, f.result())))
        return task_id

    # -- results --------------------------------------------------------------------------------------------
    def _on_event(self, name: str, payload: tuple[Event, int]) -> None:
        event, attempt = payload
        self.record.event(name, event, attempt)

    def _on_result(self, task_id: str, result: TaskResult) -> None:
        name = self.running.pop(task_id, None)
        if name is None:
            return
        state = self.states[name]
        op = state.node.operator
        self.capacity.give_back(state.executor, op)  # type: ignore[arg-type]
        self.record.attempt(state, result)
        if state.status != "running":
            return  # cancelled meanwhile
        if result.ok:
            for ref in result.outputs.values():
                blobs = ref.pop("inline", None)
                if blobs:
                    self.record.keep_inline(name, blobs)
                    ref["inline"] = sorted(blobs)
            self._complete(state, result.outputs, cached=False, host=result.host)
            return
        state.error = result.error
        if (
            state.attempts <= op.retries
            and not self.stopping
            and result.error
            and result.error.get("type") != "Cancelled"
        ):
            delay = op.retry_delay * (2 ** (state.attempts - 1)) * (1 + random.uniform(0, 0.25))
            heapq.heappush(self.timers, (time.monotonic() + delay, name))
            self.record.set(state, status="queued", error=result.error)
            self.record.retry(state, delay)
            return
        self._fail(
            state, result.error or {"type": "Error", "message": "failed", "traceback": None}, host=result.host
        )

    def _complete(
        self,
        state: NodeState,
        outputs: dict[str, Any],
        *,
        cached: bool,
        host: str | None = None,
        reuse: dict[str, Any] | None = None,
        attempts: int | None = None,
    ) -> None:
        state.outputs = outputs
        state.status = "cached" if cached else "succeeded"
        self.record.completed(state, cached=cached, host=host, reuse=reuse, attempts=attempts)
        self._notify(state.node.name, state.status)
        for user in self.users.get(state.node.name, ()):
            child = self.states[user]
            child.waiting -= 1
            if child.waiting == 0 and child.status == "pending":
                self.ready.append(user)
                self._must_flush = True  # the child may run only once this completion is committed

    def _fail(self, state: NodeState, error: dict[str, Any], *, host: str | None = None) -> None:
        self.record.failed(state, error, host)
        self._notify(state.node.name, "failed")
        if self.first_error is None:
            self.first_error = f"node '{state.node.name}' failed: {error.get('type')}: {error.get('message')}"
        self._cascade(
            state.node.name,
            "upstream_failed",
            {"type": "UpstreamFailed", "message": f"upstream node '{state.node.name}' failed"},
        )
        if self.fail_fast:
            self._cancel_all("--fail-fast: a node failed", by_user=False)

    def _cascade(self, name: str, status: str, error: dict[str, Any]) -> None:
        stack = list(self.users.get(name, ()))
        while stack:
            child = self.states[stack.pop()]
            if child.status in ("pending", "queued"):
                self.record.set(child, status=status, error=error)
                self._notify(child.node.name, status)
                stack.extend(self.users.get(child.node.name, ()))

    def _cancel_all(self, why: str, *, by_user: bool = True) -> None:
        """Stop everything still to do; the run ends cancelled, or failed under --fail-fast."""
        if self.stopping:
            return
        self.stopping = True
        self.cancelled = by_user
        self.first_error = self.first_error or f"cancelled: {why}"
        for task_id, name in list(self.running.items()):
            self.executors[self.states[name].executor].cancel(task_id)  # type: ignore[index]
        self.timers.clear()
        for waiting in self.dispatchable.values():
            waiting.clear()
        now = time.time()
        error = {"type": "Cancelled", "message": why}
        for state in self.states.values():
            if state.status not in FINAL:
                self.record.set(state, status="cancelled", error=error, ended_at=now)
        self.running.clear()

    # -- persistence ---------------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._must_flush = False
        self._flushed_at = time.monotonic()
        self.batch.flush()

    def _heartbeat(self) -> None:
        while self._beating:
            try:
                if repo.heartbeat(self.engine, self.run_id) and not self.stopping:
                    self.inbox.put(("cancel", "cancelled by `flow cancel`"))
            except Exception:
                pass  # a busy database delays a heartbeat; the next one catches up
            time.sleep(HEARTBEAT_S)

    def _notify(self, name: str, status: str) -> None:
        if self.progress is not None:
            self.progress(name, status, {})

    def _finish(self) -> str:
        statuses = [state.status for state in self.states.values()]
        if self.cancelled:
            status = "cancelled"
        elif all(s in DONE for s in statuses):
            status = "succeeded"
        else:
            status = "failed"
            if self.first_error is None:
                self.first_error = "some nodes did not finish"
        repo.end_run(self.engine, self.run_id, status, None if status == "succeeded" else self.first_error)
        return status
