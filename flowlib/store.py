"""The content-addressed artifact store: ``objects/ab/<sha256>`` files plus ``refs/<name>`` pointers.

An artifact file is ``b"FLOW1 <serializer> <version>\\n"`` followed by the payload, and
its digest is the sha256 of the whole file, so the header is covered by the digest.
Every read is verified; writes go to a temporary name and are renamed into place, so
no reader ever sees half an artifact under a real digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flowlib import serializers
from flowlib.errors import FlowError
from flowlib.storefs import CHUNK, FsspecFS, LocalFS, local_path

__all__ = ["ArtifactRef", "ArtifactStore", "CorruptArtifact", "InvalidDigest", "InvalidRefName"]

MAGIC = b"FLOW1 "
MANIFEST = "manifest"
MANIFEST_VERSION = 1
STREAM_MIN = 16 << 20  # tensors and arrays this large stream to and from a local store
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_REF_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_HEADER_MAX = 256
_PARALLEL_MIN = 16
_PARALLEL_WORKERS = 8


class CorruptArtifact(FlowError):
    """An artifact is missing, or its bytes do not hash to its digest."""

    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(f"artifact {digest} is {reason}")
        self.digest = digest
        self.reason = reason


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
    def from_json(cls, d: dict[str, Any]) -> ArtifactRef:
        return cls(str(d["digest"]), str(d["serializer"]), int(d["serializer_version"]), int(d["size"]))


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


def _serializer(digest: str, name: str, version: int) -> serializers.Serializer:
    serializer = serializers.get(name)
    if version != serializer.version:
        raise FlowError(
            f"artifact {digest} was written by serializer {name!r} version {version}; "
            f"this flowlib reads version {serializer.version}"
        )
    return serializer


def pack(serializer: str, version: int, payload: bytes) -> tuple[ArtifactRef, bytes]:
    """Return the artifact bytes (header + payload) and their ref, without storing anything."""
    data = encode_header(serializer, version) + payload
    return ArtifactRef(hashlib.sha256(data).hexdigest(), serializer, version, len(data)), data


def encode(value: Any) -> tuple[ArtifactRef, bytes]:
    """Serialize `value` with the serializer its type selects; nothing is stored."""
    serializer = serializers.choose(value)
    return pack(serializer.name, serializer.version, serializer.dumps(value))


def manifest_payload(refs: list[ArtifactRef]) -> bytes:
    return json.dumps([[r.digest, r.serializer] for r in refs], separators=(",", ":")).encode()


def encode_header(serializer: str, version: int) -> bytes:
    if not serializer or not re.fullmatch(r"[A-Za-z0-9_.-]+", serializer):
        raise FlowError(f"invalid serializer name {serializer!r}")
    return MAGIC + serializer.encode() + b" " + str(int(version)).encode() + b"\n"


def _parse_header(digest: str, data: bytes) -> tuple[str, int, int]:
    """Return (serializer, version, payload offset) of a header-first artifact."""
    end = data.find(b"\n", 0, _HEADER_MAX)
    parts = data[len(MAGIC) : end].split(b" ") if data.startswith(MAGIC) and end > 0 else []
    if len(parts) != 2 or not parts[1].isdigit():
        raise CorruptArtifact(digest, "not a flowlib artifact (bad header)")
    return parts[0].decode("ascii", "replace"), int(parts[1]), end + 1


def _parse_trailer(digest: str, tail: bytes) -> tuple[str, int, bytes, int]:
    """Return (serializer, version, lead bytes, trailer length) of a payload-first artifact.

    A large torch artifact is the torch file itself followed by a trailer line, so
    torch can map it from disk; the lead bytes logically precede the payload.
    """
    start = tail.rfind(b"\n" + MAGIC)
    parts = tail[start + 1 + len(MAGIC) : -1].split(b" ") if start >= 0 and tail.endswith(b"\n") else []
    if len(parts) != 3 or not parts[1].isdigit():
        raise CorruptArtifact(digest, "not a flowlib artifact (bad header or trailer)")
    return parts[0].decode("ascii", "replace"), int(parts[1]), parts[2], len(tail) - start


def _split(digest: str, data: bytes) -> tuple[str, int, bytes]:
    """Return (serializer, version, payload) of either layout."""
    if data.startswith(MAGIC):
        name, version, offset = _parse_header(digest, data)
        return name, version, data[offset:]
    name, version, lead, length = _parse_trailer(digest, data[-_HEADER_MAX:])
    return name, version, lead + data[: len(data) - length]


class ArtifactStore:
    """A content-addressed store of serialized values under a folder or fsspec URL."""

    def __init__(self, url: str, *, fsync: bool = True) -> None:
        self.url = str(url)
        self.fsync = fsync
        local = local_path(self.url)
        self._fs: LocalFS | FsspecFS = LocalFS(local, fsync) if local is not None else FsspecFS(self.url)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

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

            def produce(file: Any) -> None:
                lead = serializer.dump_payload_first(value, file)
                if lead is None:  # this serializer cannot be read at an offset: header first
                    file.write(encode_header(serializer.name, serializer.version))
                    serializer.dump(value, file)
                else:
                    file.write(
                        b"\n" + encode_header(serializer.name, serializer.version)[:-1] + b" " + lead + b"\n"
                    )

            digest, size = self._fs.write_stream(produce)
            return ArtifactRef(digest, serializer.name, serializer.version, size)
        return self.put_bytes(serializer.name, serializer.version, serializer.dumps(value))

    def put_bytes(self, serializer: str, version: int, payload: bytes) -> ArtifactRef:
        """Store an already serialized payload under its header."""
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
        return self.put_bytes(MANIFEST, MANIFEST_VERSION, manifest_payload(refs)), refs

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

    def get(self, digest: str) -> Any:
        """Load the value stored under ``digest`` (a manifest loads as the list of its elements)."""
        if self.is_large(digest):
            return self._get_large(digest, self.path_for(digest))
        return self.decode(digest, self.read_verified(digest), verified=True)

    def is_large(self, digest: str) -> bool:
        """Whether `get` streams this artifact (a big file in a local store)."""
        if not isinstance(self._fs, LocalFS):
            return False
        try:
            return os.path.getsize(self.path_for(digest)) >= STREAM_MIN
        except OSError:
            return False

    def _get_large(self, digest: str, path: str) -> Any:
        """Load a large artifact while a thread hashes the same file; nothing is returned unverified.

        A payload-first torch artifact is memory-mapped, so the load costs no read of its own.
        """
        hashed: list[bool] = []
        checker = threading.Thread(target=lambda: hashed.append(self.verify(digest)), daemon=True)
        checker.start()
        try:
            with open(path, "rb") as file:
                head = file.read(len(MAGIC))
                if head == MAGIC:
                    file.seek(0)
                    name, version, offset = _parse_header(digest, file.read(_HEADER_MAX))
                    file.seek(offset)
                    value = None if name == MANIFEST else _serializer(digest, name, version).load(file)
                else:
                    file.seek(max(0, os.path.getsize(path) - _HEADER_MAX))
                    name, version, lead, _ = _parse_trailer(digest, file.read())
                    value = _serializer(digest, name, version).load_path(path, lead)
        except Exception:
            checker.join()
            if not hashed[0]:
                raise CorruptArtifact(digest, "corrupt: its bytes do not hash to its digest") from None
            raise
        checker.join()
        if not hashed[0]:
            raise CorruptArtifact(digest, "corrupt: its bytes do not hash to its digest")
        return value if name != MANIFEST else self.decode(digest, self.read_verified(digest), verified=True)

    def decode(self, digest: str, data: bytes, element: Any = None, *, verified: bool = False) -> Any:
        """Turn an artifact's bytes into its value; a manifest's elements come from `element(digest)`."""
        if not verified and hashlib.sha256(data).hexdigest() != digest:
            raise CorruptArtifact(digest, "corrupt: its bytes do not hash to its digest")
        name, version, payload = _split(digest, data)
        if name == MANIFEST:
            return [(element or self.get)(d) for d in self._manifest(digest, version, payload)]
        return _serializer(digest, name, version).loads(payload)

    def manifest_elements(self, digest: str, data: bytes | None = None) -> list[str]:
        """Return the element digests of a manifest artifact without loading the elements."""
        data = self.read_verified(digest) if data is None else data
        name, version, payload = _split(digest, data)
        if name != MANIFEST:
            raise FlowError(f"artifact {digest} is a {name!r} artifact, not a list manifest")
        return self._manifest(digest, version, payload)

    @staticmethod
    def _manifest(digest: str, version: int, payload: bytes) -> list[str]:
        if version != MANIFEST_VERSION:
            raise FlowError(f"artifact {digest} is a manifest of unknown version {version}")
        try:
            return [check_digest(entry[0]) for entry in json.loads(payload)]
        except (ValueError, TypeError, IndexError, KeyError) as e:
            raise CorruptArtifact(digest, f"a malformed manifest ({e})") from None

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

    def set_ref(self, name: str, digest: str) -> None:
        """Point the ref ``name`` at ``digest``, replacing it atomically."""
        check_digest(digest)
        self._fs.write_atomic(
            self._fs.join("refs", *check_ref_name(name).split("/")), digest.encode() + b"\n"
        )

    def get_ref(self, name: str) -> str | None:
        """Return the digest the ref ``name`` points at, or None if it is not set."""
        data = self._fs.read(self._fs.join("refs", *check_ref_name(name).split("/")))
        if data is None:
            return None
        return check_digest(data.decode("ascii", "replace").strip())

    def delete_ref(self, name: str) -> None:
        """Remove the ref ``name``; a missing one is not an error."""
        self._fs.delete(self._fs.join("refs", *check_ref_name(name).split("/")))

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """Yield (name, digest) for every ref, optionally only those under ``prefix/``."""
        folder = (
            self._fs.join("refs", *check_ref_name(prefix).split("/")) if prefix else self._fs.join("refs")
        )
        for rel, base in self._fs.walk_files(folder):
            if not base.startswith(".tmp-"):
                name = f"{prefix}/{rel}" if prefix else rel
                digest = self.get_ref(name)
                if digest is not None:
                    yield name, digest
