"""What a code snapshot holds: the project's code, never what .gitignore or the local run state keeps."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from flowlib.config import load
from scheduler.server.snapshots import digest_of, local_state, pack


def _names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return set(archive.getnames())


def _write(root: Path, relative: str, text: str = "x") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_snapshot_holds_the_code_and_leaves_out_ignored_files_and_local_state(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    for relative in ("pipeline.py", "lib/helpers.py", "data/big.csv", "notes.log", ".flow/flow.db"):
        _write(root, relative)
    _write(root, ".gitignore", "data/\n*.log\n")
    _write(root, "env/pyvenv.cfg")
    _write(root, "env/lib/site.py")
    _write(root, "__pycache__/pipeline.cpython-311.pyc")
    # FLOW_HOME inside the project under another name, and a SQLite database flow.toml names
    for relative in ("state/flow.db", "state/artifacts/ab/cdef", "runs.db", "runs.db-wal", "runs-optuna.db"):
        _write(root, relative)
    _write(root, "flow.toml", '[flow]\ndb = "sqlite:///runs.db"\n')
    config = load(root, environ={"FLOW_HOME": str(root / "state")})

    data = pack(root, 50, leave_out=local_state(config))

    assert _names(data) == {"pipeline.py", "lib/helpers.py", ".gitignore", "flow.toml"}
    assert digest_of(pack(root, 50, leave_out=local_state(config))) == digest_of(data)
    assert "state/flow.db" in _names(pack(root, 50))  # only the configuration says it is state


def test_state_outside_the_project_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    _write(root, "pipeline.py")
    config = load(root, environ={"FLOW_HOME": str(tmp_path / "elsewhere")})
    assert _names(pack(root, 50, leave_out=local_state(config))) == {"pipeline.py"}
