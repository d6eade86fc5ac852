"""One trial's project folder: the pipeline, its FLOW_HOME, `flow` as a subprocess, and its records.

The database is read directly (SQLAlchemy Core over the scheduler's own table definitions),
the way an operator of the system would inspect it after an incident.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, pool, select

from benchmarks.chaoslib.services import FLOW

DONE = ("succeeded", "cached")  # a node whose outputs a run holds
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Mark:
    node: str
    run: str
    attempt: int
    pid: int


@dataclass
class Project:
    """A folder with flow.toml, the pipeline `p.py`, the marks file and (by default) FLOW_HOME."""

    root: Path
    db_url: str | None = None  # None: SQLite in FLOW_HOME
    artifacts: Path | None = None  # None: FLOW_HOME/artifacts
    extra_env: dict[str, str] = field(default_factory=dict)
    _engine: Engine | None = None

    @property
    def home(self) -> Path:
        return self.root / ".flow"

    @property
    def store(self) -> Path:
        return self.artifacts or self.home / "artifacts"

    @property
    def marks_file(self) -> Path:
        return self.root.parent / "marks.log"  # outside the project: a server's snapshot leaves it out

    @property
    def url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'flow.db'}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOW_", "CHAOS_"))}
        env.update(FLOW_HOME=str(self.home), CHAOS_MARKS=str(self.marks_file), **self.extra_env)
        if self.db_url:
            env["FLOW_DB_URL"] = self.db_url
        if self.artifacts:
            env["FLOW_ARTIFACTS"] = str(self.artifacts)
        return env

    def setup(self, pipeline: str, toml: str = "") -> Project:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "flow.toml").write_text("[executors.local]\nworkers = 2\n" + toml)
        (self.root / "p.py").write_text(pipeline)
        return self

    # -- flow ------------------------------------------------------------------------------
    def flow(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> Ran:
        done = subprocess.run(
            [FLOW, *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Ran(done.returncode, done.stdout, done.stderr)

    def popen(self, *args: str) -> subprocess.Popen:
        """`flow ARGS` in a session of its own (its process group holds the workers it starts)."""
        return subprocess.Popen(
            [FLOW, *args],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    # -- marks -----------------------------------------------------------------------------
    def marks(self) -> list[Mark]:
        """Every real execution so far, in order (a line being written is left for the next read)."""
        try:
            text = self.marks_file.read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines(keepends=True):
            parts = line.split()
            if line.endswith("\n") and len(parts) == 4:
                found.append(Mark(parts[0], parts[1], int(parts[2]), int(parts[3])))
        return found

    def executions(self) -> Counter[str]:
        return Counter(mark.node for mark in self.marks())

    def wait_for_marks(self, count: int, process: subprocess.Popen | None, timeout: float = 120) -> bool:
        """Wait until `count` distinct nodes have started (False: the process ended first)."""
        deadline = time.monotonic() + timeout
        while len({m.node for m in self.marks()}) < count:
            if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    # -- the database ----------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.url, poolclass=pool.NullPool)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def run_ids(self) -> list[str]:
        from scheduler.store.models import runs

        with self.engine.connect() as conn:
            return list(conn.scalars(select(runs.c.id).order_by(runs.c.created_at)))

    def run_row(self, run_id: str) -> Any:
        from scheduler.store.models import runs

        with self.engine.connect() as conn:
            return conn.execute(select(runs).where(runs.c.id == run_id)).first()

    def statuses(self, run_id: str) -> dict[str, str]:
        """Node name -> status as committed in the database now."""
        from scheduler.store.models import nodes

        with self.engine.connect() as conn:
            rows = conn.execute(select(nodes.c.name, nodes.c.status).where(nodes.c.run_id == run_id))
            return {name: status for name, status in rows}

    def node_rows(self, run_id: str | None = None) -> list[Any]:
        """(run_id, name, status, outputs, error) of every node, or of one run's."""
        from scheduler.store.models import nodes

        query = select(nodes.c.run_id, nodes.c.name, nodes.c.status, nodes.c.outputs, nodes.c.error)
        if run_id is not None:
            query = query.where(nodes.c.run_id == run_id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def wait_run_finished(self, run_id: str, timeout: float = 180) -> str | None:
        """Poll the run's status until it has ended (the status), or None at the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = self.run_row(run_id).status
            except Exception:  # the database may be restarting
                status = None
            if status in FINISHED:
                return status
            time.sleep(0.1)
        return None
