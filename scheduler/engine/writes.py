"""What a run has decided since its last commit, as plain rows (no database here).

The state machine records every decision into a Writes; a driver commits it in one
transaction (scheduler.store.batch), and only then starts what depends on it.
"""

from __future__ import annotations

from typing import Any

KINDS = (
    "fingerprints",
    "attempts",
    "artifacts",
    "cache",
    "metrics",
    "checkpoints",
    "events",
    "log_chunks",
)


class Writes:
    """Pending rows of one run. `urgent` is set when something may start only once they are
    committed (a success that made a node ready)."""

    __slots__ = ("changes", "new_edges", "new_nodes", "nodes", "rows", "run_id", "store_writes", "urgent")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        self.nodes: dict[str, dict[str, Any]] = {}  # node name -> columns to set
        self.new_nodes: list[dict[str, Any]] = []  # rows of nodes found at run time (map items)
        self.new_edges: list[tuple[str, str]] = []
        # (node, status, time) in order: one `node_states` event per commit, not a row per change
        self.changes: list[tuple[str, str, float]] = []
        self.store_writes: list[
            tuple[Any, bytes]
        ] = []  # (ArtifactRef, bytes) for the store, before the commit
        self.urgent = False

    def __bool__(self) -> bool:
        return bool(self.nodes or self.changes or self.new_nodes or any(self.rows.values()))

    def node(self, name: str, **columns: Any) -> None:
        self.nodes.setdefault(name, {}).update(columns)

    def state(self, name: str, status: str, time: float) -> None:
        self.changes.append((name, status, time))

    def add(self, kind: str, row: dict[str, Any]) -> None:
        self.rows[kind].append(row)

    def event(self, node: str | None, kind: str, data: Any, time: float) -> None:
        self.add("events", {"run_id": self.run_id, "node": node, "kind": kind, "data": data, "time": time})

    def artifact(self, node: str, ref: dict[str, Any], time: float, data: bytes | None = None) -> None:
        """Index an artifact; `data` holds the bytes of one kept in the database."""
        self.add(
            "artifacts",
            {
                "digest": ref["digest"],
                "serializer": ref["serializer"],
                "serializer_version": ref["serializer_version"],
                "size": ref["size"],
                "created_at": time,
                "run_id": self.run_id,
                "node": node,
                "data": data,
            },
        )

    def take(self) -> Writes:
        """Hand these rows over and start afresh."""
        taken = Writes(self.run_id)
        taken.rows, self.rows = self.rows, taken.rows
        taken.nodes, self.nodes = self.nodes, taken.nodes
        taken.new_nodes, self.new_nodes = self.new_nodes, taken.new_nodes
        taken.new_edges, self.new_edges = self.new_edges, taken.new_edges
        taken.changes, self.changes = self.changes, taken.changes
        taken.store_writes, self.store_writes = self.store_writes, taken.store_writes
        taken.urgent, self.urgent = self.urgent, False
        return taken
