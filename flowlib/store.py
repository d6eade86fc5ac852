"""The content-addressed artifact store: ``objects/ab/<sha256>`` files plus ``refs/<name>`` pointers.

An artifact file is exactly its serializer's format (a ``.npy`` file, a ``torch.save``
file, JSON, a pickle), with nothing before or after it; its digest is the sha256 of
the file. Which serializer wrote it travels beside the digest, in an ``ArtifactRef``
(and in the run database), so every load names both. Every read is verified; writes
go to a temporary name and are renamed into place, so no reader ever sees half an
artifact under a real digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from flowlib import serializers
from flowlib.errors import FlowError
from flowlib.storefs import CHUNK, FsspecFS, LocalFS, local_path

__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "CorruptArtifact",
    "InvalidDigest",
    "InvalidRefName",
    "NeedsPipelineCode",
]

MANIFEST = "manifest"  # a list stored one artifact per element: JSON [[digest, serializer, version, size]]
MANIFEST_VERSION = 2
STREAM_MIN = 16 << 20  # tensors and arrays this large stream to and from a local store
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_HEX_RE = re.compile(r"[0-9a-f]*")
_REF_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_PARALLEL_MIN = 16
_PARALLEL_WORKERS = 8


class CorruptArtifact(FlowError):
    """An artifact is missing, or its bytes do not hash to its digest."""

    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(f"artifact {digest} is {reason}")
        self.digest = digest
        self.reason = reason


class NeedsPipelineCode(FlowError):
    """An artifact's value needs a class from the pipeline's code (a pickle naming its module),
    which this process has not imported: the artifact is fine."""

    def __init__(self, digest: str, cause: BaseException) -> None:
        super().__init__(f"artifact {digest[:12]} needs the pipeline's code to load ({cause})")
        self.digest = digest


class InvalidDigest(FlowError, ValueError):
    """A string that is not exactly 64 lowercase hex characters was used as a digest."""


class InvalidRefName(FlowError, ValueError):
    """A ref name is empty, absolute, or has a segment outside ``[A-Za-z0-9._-]`` or starting with '.'."""


@dataclass(frozen=True)
class ArtifactRef:
    """Where a stored value is and how it was serialized; ``size`` is the file size in bytes."""

    digest: str
    serializer: str
    serializer_version: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "serializer": self.serializer,
            "serializer_version": self.serializer_version,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ArtifactRef:
        return cls(str(d["digest"]), str(d["serializer"]), int(d["serializer_version"]), int(d["size"]))

    @classmethod
    def of(cls, ref: ArtifactRef | Mapping[str, Any]) -> ArtifactRef:
        return ref if isinstance(ref, ArtifactRef) else cls.from_json(ref)


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is 64 lowercase hex characters, else raise InvalidDigest."""
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise InvalidDigest(f"not an artifact digest (64 lowercase hex characters): {digest!r}")
    return digest


def check_ref_name(name: str) -> str:
    """Return ``name`` if it is a safe relative ref name, else raise InvalidRefName."""
    segments = name.split("/") if isinstance(name, str) else [""]
    # A leading '.' would allow '.', '..' and collisions with our '.tmp-' files.
    if not all(_REF_SEGMENT_RE.fullmatch(s) and not s.startswith(".") for s in segments) or ".." in name:
        raise InvalidRefName(
            f"invalid ref name {name!r}: use '/'-separated segments of [A-Za-z0-9._-] not starting with '.'"
        )
    return name


def serializer_of(ref: ArtifactRef) -> serializers.Serializer:
    """The serializer that reads `ref`; another version of it is an error naming both."""
    serializer = serializers.get(ref.serializer)
    if ref.serializer_version != serializer.version:
        raise FlowError(
            f"artifact {ref.digest} was written by serializer {ref.serializer!r} version "
            f"{ref.serializer_version}; this flowlib reads version {serializer.version}"
        )
    return serializer


def pack(serializer: str, version: int, payload: bytes) -> tuple[ArtifactRef, bytes]:
    """Return the artifact bytes (the payload itself) and their ref, without storing anything."""
    return ArtifactRef(hashlib.sha256(payload).hexdigest(), serializer, version, len(payload)), payload


def encode(value: Any) -> tuple[ArtifactRef, bytes]:
    """Serialize `value` with the serializer its type selects; nothing is stored."""
    serializer = serializers.choose(value)
    return pack(serializer.name, serializer.version, serializer.dumps(value))


def manifest_payload(refs: list[ArtifactRef]) -> bytes:
    rows = [[r.digest, r.serializer, r.serializer_version, r.size] for r in refs]
    return json.dumps(rows, separators=(",", ":")).encode()


def pack_manifest(refs: list[ArtifactRef]) -> tuple[ArtifactRef, bytes]:
    """The manifest artifact of a list stored one artifact per element."""
    return pack(MANIFEST, MANIFEST_VERSION, manifest_payload(refs))


def manifest_rows(digest: str, payload: bytes) -> list[list[Any]]:
    """The elements a manifest lists as [digest, serializer, version, size] lists, checked all at
    once: a map's manifest lists a million, and a cache check needs no ArtifactRef of each."""
    try:
        rows = json.loads(payload)
    except ValueError as exc:
        raise CorruptArtifact(digest, f"a malformed manifest ({exc})") from None
    # column by column with map() and set(): the checks run in C, not once per element in Python
    shaped = type(rows) is list and set(map(type, rows)) <= {list} and set(map(len, rows)) <= {4}
    columns = [list(map(itemgetter(i), rows)) for i in range(4)] if shaped else []
    typed = shaped and (
        set(map(type, columns[0])) <= {str} and set(map(len, columns[0])) <= {64}
        and set(map(type, columns[1])) <= {str}
        and set(map(type, columns[2])) <= {int} and set(map(type, columns[3])) <= {int}
    )  # fmt: skip
    if not typed or not _HEX_RE.fullmatch("".join(columns[0])):
        raise CorruptArtifact(
            digest, "a malformed manifest (an element is not [digest, serializer, version, size])"
        )
    return rows


def parse_manifest(digest: str, payload: bytes) -> list[ArtifactRef]:
    """The element refs a manifest lists."""
    return [ArtifactRef(*row) for row in manifest_rows(digest, payload)]


class ArtifactStore:
    """A content-addressed store of serialized values under a folder or fsspec URL."""

    def __init__(self, url: str, *, fsync: bool = True) -> None:
        self.url = str(url)
        self.fsync = fsync
        local = local_path(self.url)
        self._fs: LocalFS | FsspecFS = LocalFS(local, fsync) if local is not None else FsspecFS(self.url)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    @property
    def is_local(self) -> bool:
        return isinstance(self._fs, LocalFS)

    def path_for(self, digest: str) -> str:
        """Return the file path of ``digest``; raises InvalidDigest for anything but 64 lowercase hex."""
        check_digest(digest)
        return self._fs.join("objects", digest[:2], digest)

    # -- writing ---------------------------------------------------------------

    def put(self, value: Any) -> ArtifactRef:
        """Serialize ``value`` with the serializer its type selects and store it.

        A large tensor or array in a local store streams to disk, hashed while written.
        """
        serializer = serializers.choose(value)
        hint = serializer.size_hint(value)
        if hint is not None and hint >= STREAM_MIN and isinstance(self._fs, LocalFS):
            digest, size = self._fs.write_stream(lambda file: serializer.dump(value, file))
            return ArtifactRef(digest, serializer.name, serializer.version, size)
        return self.put_bytes(serializer.name, serializer.version, serializer.dumps(value))

    def put_bytes(self, serializer: str, version: int, payload: bytes) -> ArtifactRef:
        """Store an already serialized payload."""
        ref, data = pack(serializer, version, payload)
        self.write(ref, data)
        return ref

    def write(self, ref: ArtifactRef, data: bytes) -> None:
        """Store bytes made by `pack`/`encode` under their digest."""
        # Content-addressed: an intact file is already this value. A damaged one
        # is rewritten, which is how a recomputed artifact repairs the store.
        if not self.verify(ref.digest):
            self._fs.write_atomic(self.path_for(ref.digest), data)

    def put_list(self, values: list[Any]) -> tuple[ArtifactRef, list[ArtifactRef]]:
        """Store each element on its own plus a manifest listing them; returns (manifest, elements)."""
        if self._fs.io_bound and len(values) >= _PARALLEL_MIN:
            # Threads overlap fsync and network waits; without those the GIL makes them a loss.
            with ThreadPoolExecutor(_PARALLEL_WORKERS) as pool:
                refs = list(pool.map(self.put, values))
        else:
            refs = [self.put(v) for v in values]
        manifest, data = pack_manifest(refs)
        self.write(manifest, data)
        return manifest, refs

    def delete(self, digest: str) -> None:
        """Remove an artifact; a missing one is not an error."""
        self._fs.delete(self.path_for(digest))

    # -- reading ---------------------------------------------------------------

    def read_verified(self, digest: str) -> bytes:
        """Return the whole file of ``digest`` after checking its sha256; raises CorruptArtifact."""
        data = self._fs.read(self.path_for(digest))
        if data is None:
            raise CorruptArtifact(digest, "missing from the store")
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptArtifact(digest, "corrupt: its bytes do not hash to its digest")
        return data

    def get(self, ref: ArtifactRef | Mapping[str, Any]) -> Any:
        """Load the value `ref` names (a manifest loads as the list of its elements)."""
        ref = ArtifactRef.of(ref)
        if ref.serializer != MANIFEST and self.is_large(ref.digest):
            return self._get_large(ref)
        return self.decode(ref, self.read_verified(ref.digest), verified=True)

    def is_large(self, digest: str) -> bool:
        """Whether `get` streams this artifact (a big file in a local store)."""
        if not isinstance(self._fs, LocalFS):
            return False
        try:
            return os.path.getsize(self.path_for(digest)) >= STREAM_MIN
        except OSError:
            return False

    def _get_large(self, ref: ArtifactRef) -> Any:
        """Load a large artifact by path while a thread hashes the same file; nothing is returned
        unverified. A torch file is memory-mapped, so the load costs no read of its own."""
        serializer = serializer_of(ref)
        hashed: list[bool] = []
        checker = threading.Thread(target=lambda: hashed.append(self.verify(ref.digest)), daemon=True)
        checker.start()
        try:
            value = serializer.load_path(self.path_for(ref.digest))
        except Exception:
            checker.join()
            if not hashed[0]:
                raise CorruptArtifact(ref.digest, "corrupt: its bytes do not hash to its digest") from None
            raise
        checker.join()
        if not hashed[0]:
            raise CorruptArtifact(ref.digest, "corrupt: its bytes do not hash to its digest")
        return value

    def decode(self, ref: ArtifactRef, data: bytes, element: Any = None, *, verified: bool = False) -> Any:
        """Turn an artifact's bytes into its value; a manifest's elements come from `element(ref)`."""
        if not verified and hashlib.sha256(data).hexdigest() != ref.digest:
            raise CorruptArtifact(ref.digest, "corrupt: its bytes do not hash to its digest")
        if ref.serializer == MANIFEST:
            return [(element or self.get)(r) for r in self.manifest_elements(ref, data)]
        try:
            return serializer_of(ref).loads(data)
        except FlowError:
            raise
        except (ImportError, AttributeError) as exc:  # pickle's way of saying a class is not here
            raise NeedsPipelineCode(ref.digest, exc) from None
        except Exception as exc:
            raise CorruptArtifact(
                ref.digest, f"not readable as {ref.serializer} ({type(exc).__name__}: {exc})"
            ) from None

    def manifest_elements(self, ref: ArtifactRef, data: bytes | None = None) -> list[ArtifactRef]:
        """Return the element refs of a manifest artifact without loading the elements."""
        if ref.serializer != MANIFEST:
            raise FlowError(f"artifact {ref.digest} is a {ref.serializer!r} artifact, not a list manifest")
        if ref.serializer_version != MANIFEST_VERSION:
            raise FlowError(
                f"artifact {ref.digest} is a manifest of unknown version {ref.serializer_version}"
            )
        data = self.read_verified(ref.digest) if data is None else data
        return parse_manifest(ref.digest, data)

    def exists(self, digest: str) -> bool:
        """Whether a file for ``digest`` is present (not verified; see ``verify``)."""
        return self._fs.exists(self.path_for(digest))

    def verify(self, digest: str) -> bool:
        """Stream-hash the file of ``digest``; False if it is missing or does not match."""
        path = self.path_for(digest)
        h = hashlib.sha256()
        try:
            with self._fs.open_read(path) as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        return h.hexdigest() == digest

    def size(self, digest: str) -> int:
        """Return the file size of ``digest`` in bytes; raises CorruptArtifact if missing."""
        try:
            return self._fs.size(self.path_for(digest))
        except FileNotFoundError:
            raise CorruptArtifact(digest, "missing from the store") from None

    def iter_digests(self) -> Iterator[str]:
        """Yield the digest of every stored artifact (temporary files excluded)."""
        for rel, name in self._fs.walk_files(self._fs.join("objects")):
            if _DIGEST_RE.fullmatch(name) and rel == f"{name[:2]}/{name}":
                yield name

    # -- refs ------------------------------------------------------------------

    def set_ref(self, name: str, ref: ArtifactRef) -> None:
        """Point the ref ``name`` at an artifact, replacing it atomically."""
        check_digest(ref.digest)
        data = json.dumps(ref.to_json(), separators=(",", ":")).encode() + b"\n"
        self._fs.write_atomic(self._fs.join("refs", *check_ref_name(name).split("/")), data)

    def get_ref(self, name: str) -> ArtifactRef | None:
        """Return the artifact the ref ``name`` points at, or None if it is not set."""
        data = self._fs.read(self._fs.join("refs", *check_ref_name(name).split("/")))
        if data is None:
            return None
        try:
            ref = ArtifactRef.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError):
            return None  # written by an older flowlib: its artifact is unreadable anyway
        check_digest(ref.digest)
        return ref

    def delete_ref(self, name: str) -> None:
        """Remove the ref ``name``; a missing one is not an error."""
        self._fs.delete(self._fs.join("refs", *check_ref_name(name).split("/")))

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, ArtifactRef]]:
        """Yield (name, ref) for every ref, optionally only those under ``prefix/``."""
        folder = (
            self._fs.join("refs", *check_ref_name(prefix).split("/")) if prefix else self._fs.join("refs")
        )
        for rel, base in self._fs.walk_files(folder):
            if not base.startswith(".tmp-"):
                name = f"{prefix}/{rel}" if prefix else rel
                ref = self.get_ref(name)
                if ref is not None:
                    yield name, ref
