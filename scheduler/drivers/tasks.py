"""From the state machine's Submit commands to the TaskSpecs executors run."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from executors.base import OperatorRef, TaskSpec, input_refs
from flowlib.artifacts import INLINE_LIMIT, may_be_inline
from flowlib.plan import OperatorSpec, Plan, unb64
from flowlib.store import MANIFEST, ArtifactStore, CorruptArtifact, manifest_rows
from scheduler.engine.machine import Submit
from scheduler.store.blobs import Blobs


def checkpoint_name(root_run_id: str, node: str) -> str:
    """The store ref under which a node's checkpoints are kept for a whole resume chain."""
    return f"checkpoints/{root_run_id}/{hashlib.sha256(node.encode()).hexdigest()[:32]}"


class TaskSpecs:
    """Builds the TaskSpecs of one run: operator references resolved against the plan's project
    root, and the bytes of the small artifacts its inputs name sent along (workers have no
    database)."""

    def __init__(
        self, plan: Plan, *, root_run_id: str, store: ArtifactStore, fsync: bool, blobs: Blobs
    ) -> None:
        self.plan, self.root_run_id, self.store, self.fsync, self.blobs = (
            plan,
            root_run_id,
            store,
            fsync,
            blobs,
        )
        self.root = Path(plan.project_root)
        self._refs: dict[int, OperatorRef] = {}

    def operator(self, op: OperatorSpec) -> OperatorRef:
        found = self._refs.get(id(op))
        if found is None:
            file = Path(op.file)
            path = file if file.is_absolute() else self.root / file
            pickled = unb64(op.pickled) if op.pickled is not None else None
            found = self._refs[id(op)] = OperatorRef(str(path), op.module, op.qualname, pickled)
        return found

    def spec(self, submit: Submit) -> TaskSpec:
        op = submit.op
        return TaskSpec(
            task_id=submit.task_id,
            run_id=submit.run_id,
            node=submit.node,
            attempt=submit.attempt,
            operator=self.operator(op),
            inputs={param: self._with_bytes(spec) for param, spec in submit.inputs.items()},
            resources=op.resources,
            timeout=op.timeout,
            distributed=op.distributed,
            store_url=self.store.url,
            fsync=self.fsync,
            checkpoint_ref=checkpoint_name(self.root_run_id, submit.node),
            project_root=str(self.root),
            inline_limit=INLINE_LIMIT,
            split_outputs=submit.split,
        )

    def _with_bytes(self, spec: Mapping[str, Any]) -> Mapping[str, Any]:
        """The input as a worker takes it: "inline" maps digest -> bytes of each small artifact it
        names, a list manifest's small elements included (a big manifest is read from the store)."""
        refs = input_refs(spec)
        small = [ref for ref in refs if may_be_inline(ref)]
        found = self.blobs.get_many([ref["digest"] for ref in small]) if small else {}
        for ref in refs:
            if ref["serializer"] == MANIFEST:
                data = found.get(ref["digest"]) or self._from_store(ref["digest"])
                if data is None:
                    continue  # the worker reports it missing, on the node that needs it
                elements = [d for d, _, _, size in manifest_rows(ref["digest"], data) if size <= INLINE_LIMIT]
                found.update(self.blobs.get_many(elements))
        return {**spec, "inline": found} if found else spec

    def _from_store(self, digest: str) -> bytes | None:
        try:
            return self.store.read_verified(digest)
        except CorruptArtifact:
            return None
