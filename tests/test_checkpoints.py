"""`current.checkpoint`: a retried attempt and a resumed run continue from the latest checkpoint."""

from __future__ import annotations

import sqlite3

from e2e import MARK, make_project

TRAIN = (
    MARK
    + """
import os, pathlib
from flowlib import operator, workflow, current

@operator(retries=RETRIES, retry_delay=0)
def train(epochs: int) -> int:
    state = current.checkpoint.load() or {"epoch": 0, "loss": 100}
    for epoch in range(state["epoch"], epochs):
        mark("epoch", f"{epoch} attempt={current.attempt}")
        state = {"epoch": epoch + 1, "loss": state["loss"] // 2}
        current.checkpoint.save(state, step=epoch)
        if epoch == 2 and pathlib.Path("crash-once").exists():
            pathlib.Path("crash-once").unlink()
            os._exit(1)
    return state["loss"]

@workflow
def training(epochs: int = 5) -> int:
    return train(epochs)
"""
)


def epochs(project) -> list[str]:  # type: ignore[no-untyped-def]
    return [" ".join(line.split()[:2]) for line in project.marks("epoch")]


def test_a_retry_continues_from_the_latest_checkpoint(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", TRAIN.replace("RETRIES", "1"))
    project.write("crash-once", "")
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done
    assert done.json()["outputs"] == 100 // 2**5
    assert epochs(project) == ["0 attempt=1", "1 attempt=1", "2 attempt=1", "3 attempt=2", "4 attempt=2"]
    node = done.json()["nodes"][0]
    assert node["attempts"] == 2
    db = sqlite3.connect(project.root / ".flow" / "flow.db")
    steps = [row[0] for row in db.execute("select step from checkpoints order by id")]
    assert steps == [0, 1, 2, 3, 4]


def test_a_resume_continues_from_the_original_runs_checkpoint(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", TRAIN.replace("RETRIES", "0"))
    project.write("crash-once", "")
    failed = project.flow("run", "p.py", "--json")
    assert failed.code == 1
    assert "exited with code 1" in failed.json()["nodes"][0]["error"]["message"]
    resumed = project.flow("resume", failed.json()["run_id"], "--json")
    assert resumed.code == 0, resumed
    assert epochs(project) == ["0 attempt=1", "1 attempt=1", "2 attempt=1", "3 attempt=1", "4 attempt=1"]
    assert resumed.json()["outputs"] == 100 // 2**5
    # a fresh run (not a resume) starts from scratch: checkpoints belong to a resume chain
    fresh = project.flow("run", "p.py", "--no-cache", "--json")
    assert fresh.code == 0
    assert epochs(project)[5:] == [f"{i} attempt=1" for i in range(5)]


def test_a_remote_fsspec_store_holds_the_artifacts(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", TRAIN.replace("RETRIES", "0"))
    store = tmp_path / "elsewhere"
    env = {"FLOW_ARTIFACTS": f"file://{store}"}
    done = project.flow("run", "p.py", "--json", env=env)
    assert done.code == 0, done
    assert any(store.rglob("objects/*/*"))
    assert not (project.root / ".flow" / "artifacts").exists()
    again = project.flow("run", "p.py", "--json", env=env)
    assert again.json()["nodes"][0]["status"] == "cached"
