"""Node outputs as artifacts: small ones travel inline (kept in the database), the rest in the store.

A worker writes each output with `write_output`; an artifact of at most
INLINE_LIMIT bytes is not written to the store but returned with the result,
so a no-op node costs no file and no fsync. Readers get bytes from the inline
map first and the store second, and every load verifies the digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flowlib import serializers
from flowlib.store import (
    MAGIC,
    MANIFEST,
    MANIFEST_VERSION,
    ArtifactRef,
    ArtifactStore,
    CorruptArtifact,
    manifest_payload,
    pack,
)

INLINE_LIMIT = 64 * 1024
_MANIFEST_HEADER = MAGIC + MANIFEST.encode() + b" "


class Reader:
    """Loads artifacts by digest from inline bytes, else from the store; every load is verified."""

    def __init__(self, store: ArtifactStore, inline: Any = None) -> None:
        self.store = store
        self.inline = inline if inline is not None else {}

    def data(self, digest: str) -> bytes:
        found = self.inline.get(digest)
        if found is None:
            return self.store.read_verified(digest)
        if hashlib.sha256(found).hexdigest() != digest:
            raise CorruptArtifact(digest, "corrupt: its bytes do not hash to its digest")
        return found

    def get(self, digest: str, data: bytes | None = None) -> Any:
        if data is None and self.inline.get(digest) is None and self.store.is_large(digest):
            return self.store.get(digest)  # streamed, verified while it loads
        data = self.data(digest) if data is None else data
        if data.startswith(_MANIFEST_HEADER):
            elements = self.store.manifest_elements(digest, data)
            fetch = getattr(self.inline, "get_many", None)  # one query for all elements, not one each
            known = fetch(elements) if fetch is not None else {}
            return [self.get(d, known.get(d)) if d in known else self.get(d) for d in elements]
        return self.store.decode(digest, data, self.get, verified=True)

    def elements(self, digest: str) -> list[str]:
        return self.store.manifest_elements(digest, self.data(digest))


def _store_one(store: ArtifactStore, value: Any, limit: int, inline: dict[str, bytes]) -> ArtifactRef:
    serializer = serializers.choose(value)
    hint = serializer.size_hint(value)
    if hint is not None and hint > limit:
        return store.put(value)  # large: streams to the store without a copy in memory
    ref, data = pack(serializer.name, serializer.version, serializer.dumps(value))
    _keep(store, ref, data, limit, inline)
    return ref


def _keep(store: ArtifactStore, ref: ArtifactRef, data: bytes, limit: int, inline: dict[str, bytes]) -> None:
    if ref.size <= limit:
        inline[ref.digest] = data
    else:
        store.write(ref, data)


def write_output(store: ArtifactStore, value: Any, inline_limit: int = 0) -> dict[str, Any]:
    """Store one output value; a list is stored per element plus a manifest.

    Returns the ref as JSON, with `elements` for a list and `inline` (digest -> bytes)
    for the artifacts small enough to travel with the result.
    """
    inline: dict[str, bytes] = {}
    if isinstance(value, list):
        refs = [_store_one(store, item, inline_limit, inline) for item in value]
        manifest, data = pack(MANIFEST, MANIFEST_VERSION, manifest_payload(refs))
        _keep(store, manifest, data, inline_limit, inline)
        shown = {**manifest.to_json(), "elements": [ref.digest for ref in refs]}
    else:
        shown = _store_one(store, value, inline_limit, inline).to_json()
    if inline:
        shown["inline"] = inline
    return shown
