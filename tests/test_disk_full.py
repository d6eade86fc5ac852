"""An artifact store whose disk fills: one clear error on the node, and nothing half-written kept.

The store is a small tmpfs this test mounts (root only; skipped elsewhere).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess

import pytest
from e2e import MARK, TRACEBACK, make_project

PIPELINE = (
    MARK
    + """
import numpy as np
from flowlib import operator, workflow

@operator
def small() -> int:
    mark("small")
    return 7

@operator
def big(n: int) -> np.ndarray:
    mark("big")
    return np.arange(n, dtype=np.float64)  # 8 bytes an item: over the inline limit, to the store

@operator
def total(a: np.ndarray, b: int) -> float:
    return float(a.sum()) + b

@workflow
def w(n: int = 400_000) -> float:
    return total(big(n), small())
"""
)


@pytest.fixture
def small_disk(tmp_path):  # type: ignore[no-untyped-def]
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_artifact_store_fails_the_node_clearly_and_a_rerun_with_room_recomputes_it(
    tmp_path, small_disk
) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "proj")
    project.write("p.py", PIPELINE)
    env = {"FLOW_ARTIFACTS": str(small_disk / "artifacts")}
    done = project.flow("run", "p.py", "--json", env=env)
    assert done.code == 1, done
    big = next(n for n in done.json()["nodes"] if n["name"] == "big")
    assert big["status"] == "failed"
    assert big["error"]["type"] == "StoreFull"
    assert f"No space left on the artifact store at {small_disk / 'artifacts'}" in big["error"]["message"]
    assert not re.search(TRACEBACK, big["error"]["message"])
    leftovers = [path for path in small_disk.rglob("*") if path.is_file()]
    assert leftovers == [], leftovers  # no temporary file, no half artifact

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = project.flow("run", "p.py", "--json", env=env)
    assert again.code == 0, again
    assert again.json()["outputs"] == float(sum(range(400_000))) + 7
    assert len(project.marks("big")) == 2 and len(project.marks("small")) == 1  # small came from the cache
    for path in (small_disk / "artifacts" / "objects").rglob("*"):
        if path.is_file():  # every stored artifact is whole: its bytes hash to its name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
