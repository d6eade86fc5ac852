"""Code snapshots: a project's files packed into one content-addressed archive that a server runs.

`pack` (the client) walks the project root, leaving out what `.gitignore` ignores, `.flow/`,
virtualenvs, `.git/`, `__pycache__` and the client's own run state (`local_state`); the
archive is a tar whose bytes depend only on the files' paths and contents, so the same code
gives the same digest. `unpack` (the server) extracts an archive once per digest into its
snapshot folder, refusing any path outside it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from flowlib.errors import FlowError
from scheduler.sweeps.study import study_file

if TYPE_CHECKING:
    from flowlib.config import Config

SKIPPED = {
    ".flow",
    ".git",
    "__pycache__",
    ".venv",
    "venv",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
}
KIND = "snapshot"  # the "serializer" name an archive is recorded under in the artifact store


class SnapshotError(FlowError):
    """A project cannot be packed (too big), or an archive cannot be unpacked."""


def _ignored(root: Path):  # type: ignore[no-untyped-def]
    """A predicate over relative paths: what the project's .gitignore files leave out."""
    try:
        import pathspec
    except ImportError:  # pathspec comes with the server extra; without it only the fixed names are left out
        return lambda relative, is_dir: False
    specs: list[tuple[str, object]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED and not _is_venv(Path(folder) / d)]
        if ".gitignore" in files:
            prefix = os.path.relpath(folder, root).replace(os.sep, "/")
            lines = (Path(folder) / ".gitignore").read_text(errors="replace").splitlines()
            specs.append(("" if prefix == "." else prefix + "/", pathspec.GitIgnoreSpec.from_lines(lines)))

    def ignored(relative: str, is_dir: bool) -> bool:
        for prefix, spec in specs:
            if relative.startswith(prefix):
                inner = relative[len(prefix) :] + ("/" if is_dir else "")
                if spec.match_file(inner):  # type: ignore[attr-defined]
                    return True
        return False

    return ignored


def _is_venv(folder: Path) -> bool:
    return (folder / "pyvenv.cfg").is_file()


def project_files(root: Path, leave_out: Collection[Path] = ()) -> list[Path]:
    """The files a snapshot of `root` holds, sorted; `leave_out`: absolute paths (files or folders) to skip."""
    root = Path(root).resolve()  # what `leave_out` is compared with is resolved too
    ignored = _ignored(root)
    left_out = {Path(p).resolve() for p in leave_out}
    found = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        rel_dir = os.path.relpath(folder, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIPPED
            and not _is_venv(here / d)
            and not ignored(rel_dir + d, True)
            and (here / d).resolve() not in left_out
        )
        for name in sorted(files):
            path = here / name
            if (
                path.is_file()
                and not path.is_symlink()
                and not ignored(rel_dir + name, False)
                and path not in left_out
            ):
                found.append(path)
    return found


def local_state(config: Config) -> list[Path]:
    """What a project's configuration keeps on this machine: FLOW_HOME, the artifact store, a SQLite
    run database and its sweeps' study, with their journals. Never code, wherever they lie."""
    paths = [config.home, Path(config.artifacts)]
    database_path = config.db.removeprefix("sqlite:///").partition("?")[0]
    if config.db.startswith("sqlite:///") and database_path not in ("", ":memory:"):
        database = Path(database_path)
        for db_file in (database, study_file(database)):
            paths += [db_file.with_name(db_file.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return paths


def pack(root: Path, max_mb: float, leave_out: Collection[Path] = ()) -> bytes:
    """The tar archive of a project's files; over `max_mb` megabytes is a SnapshotError naming the size."""
    root = Path(root).resolve()
    files = project_files(root, leave_out)
    total = sum(f.stat().st_size for f in files)
    if total > max_mb * 1_000_000:
        raise SnapshotError(
            f"the project at {root} holds {total / 1_000_000:.1f} MB of files to send, over the limit of "
            f"{max_mb:g} MB ([server] max_code_mb); leave data out with .gitignore"
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in files:
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            data = path.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o755 if os.access(path, os.X_OK) else 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(data: bytes, folder: Path) -> Path:
    """Extract an archive into `folder/<digest>` (once; an existing one is reused); return that path."""
    digest = digest_of(data)
    target = Path(folder) / digest
    if target.is_dir():
        return target
    Path(folder).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=folder))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive.getmembers():
                if not member.isfile() or member.name.startswith("/") or ".." in Path(member.name).parts:
                    raise SnapshotError(f"snapshot {digest[:12]} holds an unsafe entry {member.name!r}")
            archive.extractall(staging, filter="data")
        try:
            os.rename(staging, target)
        except OSError:  # another process unpacked the same snapshot first
            shutil.rmtree(staging, ignore_errors=True)
    except tarfile.TarError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise SnapshotError(f"snapshot {digest[:12]} is not a readable archive: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
