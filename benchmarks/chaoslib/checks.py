"""The checks every chaos trial ends with.

- outputs: the final run's outputs equal those of a fault-free run of the same DAG;
- re-executions: no node whose success was committed before the fault ran again (marks);
- artifacts: every artifact a succeeded (or cached) node of any run references is present and
  hashes to its digest, whether kept inline in the database or as a file (a list's manifest and
  each of its elements);
- the database: SQLite's `PRAGMA integrity_check` and `PRAGMA foreign_key_check`; on PostgreSQL
  a query per foreign key for rows pointing at nothing; and on both, no succeeded node without
  outputs and no succeeded run with a node that did not end done.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import inspect, select, text

from benchmarks.chaoslib.project import DONE, Project

INLINE_LIMIT = 64 * 1024  # flowlib.artifacts.INLINE_LIMIT: at most this size may live in the database
MANIFEST = "manifest"


def lost_outputs(project: Project, run_id: str | None, reference: Mapping[str, Any]) -> list[str]:
    """The workflow outputs the final run does not hold, or holds with another value (read as
    `flow outputs RUN --json` reads them, every artifact verified, in this process)."""
    from flowlib.store import ArtifactStore
    from scheduler.store.blobs import Blobs
    from scheduler.store.outputs import run_values

    if run_id is None:
        return sorted(reference)
    reader = Blobs(project.engine).reader(ArtifactStore(str(project.store)))
    try:
        got = run_values(project.engine, reader, run_id, imports=False)
    except Exception:
        return sorted(reference)
    return sorted(k for k in reference if not isinstance(got, dict) or got.get(k) != reference[k])


def reexecuted(
    before: Counter[str], after: Counter[str], succeeded: Iterable[str], allowed: Iterable[str] = ()
) -> list[str]:
    """Nodes committed as succeeded at the fault that executed again afterwards."""
    spared = set(allowed)
    return sorted(n for n in succeeded if n not in spared and after[n] > before[n])


class Artifacts:
    """Finds and verifies artifacts: inline rows of the `artifacts` table first, then the store."""

    def __init__(self, project: Project) -> None:
        from scheduler.store.models import artifacts

        self.project = project
        with project.engine.connect() as conn:
            rows = conn.execute(
                select(artifacts.c.digest, artifacts.c.data).where(artifacts.c.data.is_not(None))
            )
            self.inline = {digest: bytes(data) for digest, data in rows}

    def data(self, digest: str, size: int) -> bytes | None:
        if size <= INLINE_LIMIT and digest in self.inline:
            return self.inline[digest]
        path = self.project.store / "objects" / digest[:2] / digest
        try:
            return path.read_bytes()
        except OSError:
            return None

    def problem(self, ref: Mapping[str, Any]) -> str | None:
        """Why the artifact `ref` (and, for a manifest, each element) is not whole, or None."""
        digest = str(ref["digest"])
        data = self.data(digest, int(ref["size"]))
        if data is None:
            return f"{digest} missing"
        if hashlib.sha256(data).hexdigest() != digest:
            return f"{digest} corrupt"
        if ref["serializer"] == MANIFEST:
            for d, serializer, _version, size in json.loads(data):
                problem = self.problem({"digest": d, "serializer": serializer, "size": size})
                if problem is not None:
                    return problem
        return None

    def referenced(self) -> dict[str, tuple[str, str, dict[str, Any]]]:
        """digest -> (run, node, ref) of every output of a done node of any run."""
        found = {}
        for row in self.project.node_rows():
            if row.status in DONE:
                for ref in (row.outputs or {}).values():
                    found.setdefault(ref["digest"], (row.run_id, row.name, ref))
        return found

    def bad(self) -> list[str]:
        """One line per referenced artifact that is missing or corrupt."""
        lines = []
        for digest, (run, node, ref) in sorted(self.referenced().items()):
            problem = self.problem(ref)
            if problem is not None:
                lines.append(f"{problem} (an output of {node} in run {run}, {digest[:12]})")
        return lines


def artifact_producers(project: Project, digest: str) -> set[str]:
    """Names of the nodes (of any run) whose outputs are `digest` or list it as an element."""
    found = set()
    store = Artifacts(project)
    for row in project.node_rows():
        for ref in (row.outputs or {}).values():
            if ref["digest"] == digest:
                found.add(row.name)
            elif ref["serializer"] == MANIFEST:
                data = store.data(ref["digest"], int(ref["size"]))
                try:
                    elements = json.loads(data) if data else []
                except ValueError:
                    elements = []
                if any(element[0] == digest for element in elements):
                    found.add(row.name)
    return found


def integrity(project: Project) -> list[str]:
    """Problems of the database as a whole (empty: it passes)."""
    problems = []
    engine = project.engine
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            result = [r[0] for r in conn.execute(text("PRAGMA integrity_check"))]
            if result != ["ok"]:
                problems += [f"integrity_check: {line}" for line in result]
            for table, rowid, parent, _fk in conn.execute(text("PRAGMA foreign_key_check")):
                problems.append(f"foreign key: {table} row {rowid} points at a missing {parent}")
        else:
            inspector = inspect(conn)
            for table in inspector.get_table_names():
                for fk in inspector.get_foreign_keys(table):
                    own = " AND ".join(f"c.{col} IS NOT NULL" for col in fk["constrained_columns"])
                    match = " AND ".join(
                        f"p.{r} = c.{c}"
                        for c, r in zip(fk["constrained_columns"], fk["referred_columns"], strict=True)
                    )
                    query = (
                        f"SELECT count(*) FROM {table} c WHERE {own} AND NOT EXISTS "
                        f"(SELECT 1 FROM {fk['referred_table']} p WHERE {match})"
                    )
                    orphans = conn.execute(text(query)).scalar()
                    if orphans:
                        problems.append(f"foreign key: {orphans} {table} rows point at a missing row")
    runs: dict[str, set[str]] = {}
    for row in project.node_rows():
        runs.setdefault(row.run_id, set()).add(row.status)
        if row.status in DONE and not row.outputs:
            problems.append(f"node {row.name} of run {row.run_id} is {row.status} without outputs")
    for run_id, seen in runs.items():
        run = project.run_row(run_id)  # None: a foreign key problem, reported above
        if run is not None and run.status == "succeeded" and not seen <= set(DONE):
            problems.append(f"run {run_id} succeeded with nodes {sorted(seen - set(DONE))}")
    return problems
