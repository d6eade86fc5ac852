"""Node outputs as artifacts: small ones travel inline (kept in the database), the rest in the store.

A worker writes each output with `write_output`; an artifact of at most
INLINE_LIMIT bytes is not written to the store but returned with the result,
so a no-op node costs no file and no fsync. Whether an artifact lives in the
database or the store follows from its size alone. Readers get small artifacts
from the inline bytes first and the store second, and every load verifies the digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from flowlib import serializers
from flowlib.store import (
    MANIFEST,
    ArtifactRef,
    ArtifactStore,
    CorruptArtifact,
    manifest_rows,
    pack,
    pack_manifest,
    parse_manifest,
)

INLINE_LIMIT = 64 * 1024


def may_be_inline(ref: ArtifactRef | Mapping[str, Any]) -> bool:
    """Whether an artifact of this size may be kept in the database rather than the store."""
    size = ref.size if isinstance(ref, ArtifactRef) else ref["size"]
    return size <= INLINE_LIMIT


class Reader:
    """Loads artifacts from inline bytes (a mapping, or a source with `get_many`), else from the
    store; every load is verified."""

    def __init__(self, store: ArtifactStore, inline: Any = None) -> None:
        self.store = store
        self.inline = inline if inline is not None else {}

    def data(self, ref: ArtifactRef) -> bytes:
        found = self.inline.get(ref.digest) if may_be_inline(ref) else None
        if found is None:
            return self.store.read_verified(ref.digest)
        if hashlib.sha256(found).hexdigest() != ref.digest:
            raise CorruptArtifact(ref.digest, "corrupt: its bytes do not hash to its digest")
        return found

    def get(self, ref: ArtifactRef | Mapping[str, Any], data: bytes | None = None) -> Any:
        ref = ArtifactRef.of(ref)
        if data is None and not may_be_inline(ref) and ref.serializer != MANIFEST:
            return self.store.get(ref)  # large ones stream, verified while they load
        data = self.data(ref) if data is None else data
        if ref.serializer == MANIFEST:
            elements = self.store.manifest_elements(ref, data)
            fetch = getattr(self.inline, "get_many", None)  # one query for all elements, not one each
            small = [e.digest for e in elements if may_be_inline(e)]
            known = fetch(small) if fetch is not None and small else {}
            return [self.get(e, known.get(e.digest)) for e in elements]
        return self.store.decode(ref, data, verified=True)

    def elements(self, ref: ArtifactRef | Mapping[str, Any]) -> list[ArtifactRef]:
        ref = ArtifactRef.of(ref)
        return parse_manifest(ref.digest, self.data(ref))

    def element_rows(self, ref: ArtifactRef | Mapping[str, Any]) -> list[list[Any]]:
        """`elements` as plain [digest, serializer, version, size] lists."""
        ref = ArtifactRef.of(ref)
        return manifest_rows(ref.digest, self.data(ref))


def _store_one(store: ArtifactStore, value: Any, limit: int, inline: dict[str, bytes]) -> ArtifactRef:
    serializer = serializers.choose(value)
    hint = serializer.size_hint(value)
    if hint is not None and hint > limit:
        return store.put(value)  # large: streams to the store without a copy in memory
    ref, data = pack(serializer.name, serializer.version, serializer.dumps(value))
    keep(store, ref, data, limit, inline)
    return ref


def keep(store: ArtifactStore, ref: ArtifactRef, data: bytes, limit: int, inline: dict[str, bytes]) -> None:
    """Keep an artifact's bytes for the database when small enough, else write them to the store."""
    if ref.size <= limit:
        inline[ref.digest] = data
    else:
        store.write(ref, data)


def write_output(
    store: ArtifactStore, value: Any, inline_limit: int = 0, *, split: bool = False
) -> dict[str, Any]:
    """Store one output value and return its ref as JSON.

    With `split`, a list is stored one artifact per element plus a manifest (a map expands
    over it), and the ref lists its `elements` (as refs). `inline` maps digest -> bytes of
    the artifacts small enough to travel with the result.
    """
    inline: dict[str, bytes] = {}
    if split and isinstance(value, list):
        refs = [_store_one(store, item, inline_limit, inline) for item in value]
        manifest, data = pack_manifest(refs)
        keep(store, manifest, data, inline_limit, inline)
        shown = {**manifest.to_json(), "elements": [ref.to_json() for ref in refs]}
    else:
        shown = _store_one(store, value, inline_limit, inline).to_json()
    if inline:
        shown["inline"] = inline
    return shown
