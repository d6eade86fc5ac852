"""`flowlib.File`: a file input whose cache digest is its content, not its path."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from flowlib.errors import WorkflowDefinitionError

_CHUNK = 1 << 20


class File(os.PathLike):
    """A path to a file that enters the cache key by its content (sha256).

    A relative path is resolved against the folder of the file that wrote `File(...)` (the
    pipeline's folder), or against `base` when given. An operator receives the File itself:
    open it, or pass it wherever a path is taken (`pandas.read_csv(data)`).
    """

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None) -> None:
        given = Path(os.fspath(path)).expanduser()
        if not given.is_absolute():
            if base is None:
                base = Path(sys._getframe(1).f_code.co_filename).resolve().parent
            given = Path(base) / given
        self.path = given.absolute()

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"File({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, File) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __reduce__(self) -> tuple:
        return (File, (str(self.path),))

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def read_text(self, encoding: str | None = None) -> str:
        return self.path.read_text(encoding=encoding)

    def content_digest(self) -> str:
        """The sha256 of the file's bytes, as hex; a missing file is a definition error."""
        sha = hashlib.sha256()
        try:
            with open(self.path, "rb") as file:
                while chunk := file.read(_CHUNK):
                    sha.update(chunk)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise WorkflowDefinitionError(f"File({str(self.path)!r}): cannot read it: {why}") from None
        return sha.hexdigest()

    def __flow_hash__(self) -> bytes:
        return self.content_digest().encode()
