"""Where the artifact store's bytes go: a local folder, or any fsspec URL.

Both write to a temporary name and rename (or put all-or-nothing) into place, so no
reader sees half a file under its final name; the local one fsyncs file and folder
when asked, and streams large writes while a thread hashes them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

from flowlib.errors import StoreFull

CHUNK = 1 << 20
# Object stores replace a key all-or-nothing, and their "mv" is a copy plus delete.
ATOMIC_PUT_PROTOCOLS = {"memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


class HashingWriter:
    """A write-only file over a descriptor that hashes what passes through it."""

    def __init__(self, fd: int) -> None:
        self.fd, self.sha, self.size = fd, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        hasher = None
        if total >= CHUNK:  # both release the GIL: hash in a thread while the bytes go to disk
            hasher = threading.Thread(target=self.sha.update, args=(view,))
            hasher.start()
        else:
            self.sha.update(view)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        finally:
            if hasher is not None:
                hasher.join()
        self.size += total
        return total

    def flush(self) -> None:
        """Writes go straight to the descriptor."""


class LocalFS:
    """Plain os calls for a local folder: the fast path."""

    def __init__(self, root: str, fsync: bool) -> None:
        self.root, self.fsync, self.io_bound = root, fsync, fsync
        self._dirs: set[str] = set()

    def join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def _makedirs(self, folder: str) -> None:
        if folder in self._dirs:
            return
        missing, d = [], folder
        while not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        os.makedirs(folder, exist_ok=True)
        for d in missing if self.fsync else ():
            # A new directory entry is only durable once its parent is synced.
            self._fsync_dir(os.path.dirname(d))
        self._dirs.add(folder)

    @staticmethod
    def _fsync_dir(folder: str) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_atomic(self, path: str, data: bytes) -> None:
        def write(fd: int) -> str:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            return path

        self._write_then_place(os.path.dirname(path), write)

    def write_stream(self, produce: Any) -> tuple[str, int]:
        """Write what `produce(file)` writes, hashing as it goes; store it under its digest.

        The bytes are never held in memory nor read back to hash.
        """
        objects = os.path.join(self.root, "objects")
        writers: list[HashingWriter] = []

        def write(fd: int) -> str:
            writers.append(HashingWriter(fd))
            produce(writers[0])
            digest = writers[0].sha.hexdigest()
            return os.path.join(objects, digest[:2], digest)

        path = self._write_then_place(objects, write)
        return os.path.basename(path), writers[0].size

    def _write_then_place(self, folder: str, write: Callable[[int], str]) -> str:
        """Write a temporary file in `folder` with `write(fd)`, which returns where the file
        belongs; fsync it and move it there. No temporary file outlives a failure."""
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}")
        try:
            self._makedirs(folder)
            # Raw os calls: a buffered file object costs more than the write for small artifacts.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
            try:
                path = write(fd)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self._makedirs(os.path.dirname(path))
            os.replace(tmp, path)
        except BaseException as exc:
            with suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(f"No space left on the artifact store at {self.root}") from None
            raise
        if self.fsync:
            self._fsync_dir(os.path.dirname(path))
        return path

    def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def open_read(self, path: str) -> Any:
        return open(path, "rb")

    def exists(self, path: str) -> bool:
        return os.path.isfile(path)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def delete(self, path: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(path)

    def walk_files(self, folder: str) -> Iterator[tuple[str, str]]:
        """Yield (path relative to folder with '/', file name) for every file below ``folder``."""
        for dirpath, _dirs, files in os.walk(folder):
            rel = os.path.relpath(dirpath, folder)
            for name in files:
                yield (name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"), name


class FsspecFS:
    """Any fsspec filesystem; writes a temp key then moves it, unless puts are atomic."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.atomic_put = bool(ATOMIC_PUT_PROTOCOLS.intersection(protocols))
        self.io_bound = "memory" not in protocols

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def write_atomic(self, path: str, data: bytes) -> None:
        folder = path.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        if self.atomic_put:
            self.fs.pipe_file(path, data)
            return
        tmp = f"{folder}/.tmp-{secrets.token_hex(8)}"
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except BaseException:
            with suppress(OSError):
                self.fs.rm_file(tmp)
            raise

    def read(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def open_read(self, path: str) -> Any:
        return self.fs.open(path, "rb")

    def exists(self, path: str) -> bool:
        return self.fs.isfile(path)

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    def delete(self, path: str) -> None:
        with suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def walk_files(self, folder: str) -> Iterator[tuple[str, str]]:
        try:
            paths = self.fs.find(folder)
        except FileNotFoundError:
            return
        # fsspec may or may not keep a leading '/' on the paths it returns.
        base = folder.strip("/") + "/"
        for p in paths:
            p = p.lstrip("/")
            if p.startswith(base):
                rel = p[len(base) :]
                yield rel, rel.rsplit("/", 1)[-1]


def local_path(url: str) -> str | None:
    """The folder for a plain path or ``file://`` URL; None for any other fsspec URL."""
    if url.startswith("file://"):
        rest = url[len("file://") :]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        return os.path.abspath(os.path.expanduser(rest))
    if "://" in url:
        return None
    return os.path.abspath(os.path.expanduser(url))
