"""The state machine's Lookups port over the run database and the artifact store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowlib import serializers
from flowlib.artifacts import INLINE_LIMIT, Reader, may_be_inline
from flowlib.errors import FlowError
from flowlib.store import MANIFEST, ArtifactRef, ArtifactStore
from scheduler.store import repository as repo
from scheduler.store.batch import Session
from scheduler.store.blobs import Blobs


class StoreLookups:
    """Cache entries from the database; artifacts checked in the database (small ones) and the store."""

    def __init__(self, session: Session, store: ArtifactStore, blobs: Blobs) -> None:
        self.session, self.store, self.blobs = session, store, blobs
        self.reader = Reader(store, blobs)

    def cached(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found = self.session.run(
            lambda conn: repo.find_cache_entries(conn, keys, ("outputs", "run_id", "node"))
        )
        entries = {
            key: {"outputs": row.outputs, "run_id": row.run_id, "node": row.node}
            for key, row in found.items()
        }
        # one query for every small artifact the hits name, not one each when they are checked
        self.blobs.get_many(
            [ref["digest"] for e in entries.values() for ref in e["outputs"].values() if may_be_inline(ref)]
        )
        return entries

    def problem(self, outputs: Mapping[str, Any]) -> str | None:
        refs = [ArtifactRef.from_json(ref) for ref in outputs.values()]
        self.blobs.get_many([ref.digest for ref in refs if may_be_inline(ref)])
        for ref in refs:
            problem = self._problem(ref)
            if problem is None and ref.serializer == MANIFEST:
                try:
                    problem = self._elements_problem(self.reader.element_rows(ref))
                except FlowError as exc:
                    return str(exc)
            if problem is not None:
                return problem
        return None

    def _elements_problem(self, elements: list[list[Any]]) -> str | None:
        """`_problem` of every element of a manifest, in bulk (a map's lists a hundred thousand):
        each serializer once, the small ones in one query, the others in the store."""
        for kind in {(serializer, version) for _, serializer, version, _ in elements}:
            problem = self._serializer_problem(*kind)
            if problem is not None:
                return problem
        found = self.blobs.get_many([digest for digest, _, _, size in elements if size <= INLINE_LIMIT])
        for digest, _, _, _ in elements:
            if digest not in found and not self.store.verify(digest):
                return f"artifact {digest[:12]} is corrupt or missing"
        return None

    def _serializer_problem(self, serializer: str, version: int) -> str | None:
        if serializer == MANIFEST:
            return None
        try:
            current = serializers.get(serializer).version
        except FlowError:
            return f"written by an unknown serializer {serializer!r}"
        if current != version:
            return f"written by serializer {serializer} version {version}"
        return None

    def _problem(self, ref: ArtifactRef) -> str | None:
        problem = self._serializer_problem(ref.serializer, ref.serializer_version)
        if problem is not None:
            return problem
        intact = (may_be_inline(ref) and self.blobs.intact(ref.digest)) or self.store.verify(ref.digest)
        return None if intact else f"artifact {ref.digest[:12]} is corrupt or missing"

    def elements(self, ref: Mapping[str, Any]) -> list[dict[str, Any]]:
        artifact = ArtifactRef.from_json(ref)
        if artifact.serializer == MANIFEST:
            return [
                {"digest": d, "serializer": s, "serializer_version": v, "size": n}
                for d, s, v, n in self.reader.element_rows(artifact)
            ]
        # stored whole (nothing mapped over it when it was computed): split it now
        values = self.reader.get(artifact)
        if not isinstance(values, list):
            raise FlowError(
                f"artifact {artifact.digest} holds a {type(values).__name__}, not a list to map over"
            )
        return [self.store.put(value).to_json() for value in values]
