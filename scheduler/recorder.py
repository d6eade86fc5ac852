"""What a run writes down about its nodes, as rows of the scheduling step's batch.

The scheduler decides; the recorder turns each decision into the rows that make
it durable (node columns, state changes, attempts, artifacts, cache entries,
metrics, checkpoints, events). Nothing here reaches the database before the
batch's flush.
"""

from __future__ import annotations

import time
from typing import Any

from executors.base import Event, TaskResult
from flowlib.store import ArtifactRef
from scheduler.store.batch import Batch
from scheduler.store.blobs import Blobs
from scheduler.tasks import NodeState


class Recorder:
    def __init__(self, batch: Batch, blobs: Blobs, run_id: str, root_run_id: str) -> None:
        self.batch, self.blobs = batch, blobs
        self.run_id, self.root_run_id = run_id, root_run_id
        self._fingerprints: set[str] = set()

    def set(self, state: NodeState, **columns: Any) -> None:
        """Record columns of a node; a status is also a state change in the run's event log."""
        status = columns.get("status")
        if status is not None:
            state.status = status
            self.batch.state(state.node.name, status)
        self.batch.node(state.row_id, **columns)

    def note(self, state: NodeState, reason: str) -> None:
        """Record why a node did something unusual, in its `reasons` and the event log."""
        state.reasons.append(reason)
        self.set(state, reasons=list(state.reasons))
        self.batch.event(state.node.name, "note", {"reason": reason})

    def fingerprint(self, digest: str, operator: str, parts: Any) -> None:
        """Store a fingerprint's parts once per run (the database keeps the first of each digest)."""
        if digest not in self._fingerprints:
            self._fingerprints.add(digest)
            self.batch.add("fingerprints", {"digest": digest, "operator": operator, "data": parts})

    def artifact(self, node: str, ref: dict[str, Any]) -> None:
        """Index an artifact written to the store."""
        self.batch.artifact(node, ref)

    def retry(self, state: NodeState, delay: float) -> None:
        self.batch.event(state.node.name, "retry", {"attempt": state.attempts, "delay_s": delay})

    def keep_inline(self, node: str, blobs: dict[str, bytes], ref: ArtifactRef | None = None) -> None:
        """Record small artifacts in the database (with this step's commit) and in memory."""
        self.blobs.remember(blobs)
        for digest, data in blobs.items():
            shown = (
                ref.to_json()
                if ref is not None and ref.digest == digest
                else {"digest": digest, "serializer": "inline", "serializer_version": 0, "size": len(data)}
            )
            self.batch.artifact(node, shown, data)

    def attempt(self, state: NodeState, result: TaskResult) -> None:
        self.batch.add(
            "attempts",
            {
                "run_id": self.run_id,
                "node": state.node.name,
                "number": state.attempts,
                "status": "succeeded" if result.ok else "failed",
                "started_at": result.started_at or state.started_at,
                "ended_at": result.ended_at or time.time(),
                "host": result.host,
                "pid": result.pid,
                "exit_code": result.exit_code,
                "signal": result.signal,
                "error": result.error,
                "log": result.log,
            },
        )

    def completed(
        self,
        state: NodeState,
        *,
        cached: bool,
        host: str | None,
        reuse: dict[str, Any] | None,
        attempts: int | None,
    ) -> None:
        """A node's success (computed, cached or reused): its columns and, when it was computed,
        its artifacts and cache entry. `state.outputs` and `state.status` are already set."""
        now = time.time()
        outputs = state.outputs or {}
        started = state.first_started_at
        columns: dict[str, Any] = {
            "status": state.status,
            "cached": cached,
            "outputs": outputs,
            "ended_at": now,
            "duration_s": 0.0 if cached or started is None else round(now - started, 6),
            "attempts": (0 if cached else state.attempts) if attempts is None else attempts,
            "error": None,
        }
        if reuse is not None:
            columns.update(
                cache_key=reuse.get("cache_key"),
                fingerprint=reuse.get("fingerprint"),
                inputs=reuse.get("inputs"),
            )
        elif state.key is not None and cached:
            columns.update(cache_key=state.key, fingerprint=state.fingerprint, inputs=state.input_digests)
        if host:
            columns["host"] = host
        self.set(state, **columns)
        if cached or state.key is None:
            return
        for ref in outputs.values():
            if ref["digest"] not in (ref.get("inline") or ()):
                self.batch.artifact(state.node.name, ref)
        operator = state.node.operator
        if operator.cache:
            self.batch.add(
                "cache",
                {
                    "key": state.key,
                    "operator": operator.qualname,
                    "fingerprint": state.fingerprint,
                    "inputs": state.input_digests,
                    "outputs": outputs,
                    "serializers": {
                        n: [r["serializer"], r["serializer_version"]] for n, r in outputs.items()
                    },
                    "created_at": now,
                    "run_id": self.run_id,
                    "node": state.node.name,
                },
            )

    def failed(self, state: NodeState, error: dict[str, Any], host: str | None) -> None:
        now = time.time()
        state.error = error
        self.set(
            state,
            status="failed",
            error=error,
            ended_at=now,
            duration_s=round(now - (state.first_started_at or now), 6),
            host=host,
            attempts=state.attempts,
        )

    def event(self, name: str, event: Event, attempt: int) -> None:
        """What a running node reported: a metric, a checkpoint or a log line."""
        data = dict(event.data)
        if event.kind == "metric":
            self.batch.add(
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
            self.batch.add(
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
            checkpoint = {
                "digest": data["digest"],
                "serializer": "checkpoint",
                "serializer_version": 0,
                "size": data.get("size", 0),
            }
            self.batch.artifact(name, checkpoint)
        self.batch.event(name, event.kind, data)
