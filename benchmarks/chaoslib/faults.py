"""The faults, and one chaos trial: run a DAG, inject one fault at a random moment, recover, and check.

Each kind of fault is a function that drives the run, breaks it, recovers it, and returns a
`Broken`: which run holds the final outputs, which nodes were committed as succeeded at the
fault (read from the database at that moment, before the marks), the marks at that moment, the
nodes allowed to execute again (a corrupted artifact's producer), and the recovery time.
`run_trial` then applies every check of benchmarks.chaoslib.checks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
from sqlalchemy import update

from benchmarks.chaoslib.checks import Artifacts, artifact_producers, integrity, lost_outputs, reexecuted
from benchmarks.chaoslib.dag import Dag
from benchmarks.chaoslib.project import DONE, Project
from benchmarks.chaoslib.services import (
    Postgres,
    Server,
    Tmpfs,
    descendants,
    kill_all,
    outliving,
    start_servers,
    started_with,
    why_not_postgres,
    why_not_tmpfs,
)
from benchmarks.chaoslib.trial import (
    TRACEBACK,
    Broken,
    Outcome,
    Reference,
    Trial,
    at_fault,
    current_run,
    finished,
    orphans,
    random_moment,
    recover,
    reference_run,
)

__all__ = ["FAULTS", "KINDS", "Reference", "reference_run", "run_trial", "why_not"]

KINDS = ("kill-run", "kill-worker", "kill-server", "pg-restart", "disk-full", "corrupt")


def why_not(kind: str) -> str | None:
    """Why trials of `kind` cannot run here, or None."""
    if kind in ("kill-server", "pg-restart"):
        return why_not_postgres()
    if kind == "disk-full":
        return why_not_tmpfs()
    return None


# -- the faults ------------------------------------------------------------------------------
def kill_run(t: Trial) -> Broken:
    """SIGKILL `flow run` (the scheduler alone: its workers must stop by themselves); resume."""
    process = t.project.popen("run", "p.py", "--json")
    if not random_moment(t, process, early=0.15):
        t.notes.append("the run ended before the fault")
    started = descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    fault = time.monotonic()
    process.communicate(timeout=60)
    orphans(t, started)
    run_id = current_run(t.project)
    succeeded, marks = at_fault(t.project, run_id)
    if run_id is None:  # killed before it recorded anything: there is nothing to resume
        t.notes.append("killed before the run was recorded: run again")
        again = t.project.flow("run", "p.py", "--json")
        final = again.json()["run_id"] if again.code == 0 else None
    else:
        final = recover(t, run_id)
    return Broken(final, succeeded, marks, time.monotonic() - fault)


def kill_worker(t: Trial) -> Broken:
    """SIGKILL a worker process: mostly the one running a node, sometimes any process the
    scheduler started (the warm-worker template included); the run retries what it lost, or
    fails and is resumed."""
    process = t.project.popen("run", "p.py", "--json")
    random_moment(t, process)
    anyone = t.rng.random() < 0.3
    victim, succeeded, marks, fault = None, set(), Counter(), time.monotonic()
    deadline = time.monotonic() + 30
    while victim is None and process.poll() is None and time.monotonic() < deadline:
        run_id = t.project.run_ids()[-1]
        statuses = t.project.statuses(run_id)
        every = t.project.marks()
        children = {p.pid: p for p in descendants(process.pid)}
        if not children:
            break
        latest = {m.node: m for m in every}
        running = [m for m in latest.values() if statuses.get(m.node) not in DONE and m.pid in children]
        if anyone and children:
            victim = t.rng.choice(sorted(children))
            try:
                what = "the template" if children[victim].ppid() == process.pid else "a worker"
            except psutil.NoSuchProcess:
                what = "a worker that was ending"
            busy = [m.node for m in running if m.pid == victim]
            t.notes.append(f"killed {what} (pid {victim}, running {busy or 'nothing'})")
        elif running:
            victim = t.rng.choice(running).pid
            t.notes.append(f"killed the worker running {[m.node for m in running if m.pid == victim]}")
        else:
            time.sleep(0.02)
            continue
        succeeded = {n for n, s in statuses.items() if s == "succeeded"}
        marks = Counter(m.node for m in every)
        os.kill(victim, signal.SIGKILL)
        fault = time.monotonic()
    if victim is None:
        t.notes.append("no node was running on a worker: nothing killed")
    final = finished(t, process, "the run whose worker was killed")
    if final is None:
        run_id = t.project.run_ids()[-1]
        for row in t.project.node_rows(run_id):
            if row.status == "failed":
                error = row.error or {}
                retries = t.dag.node_op(row.name).retries if "[" in row.name or row.name in t.dag.ops else 0
                t.notes.append(
                    f"{row.name} (retries={retries}) failed: {error.get('type')}: {error.get('message')}"
                )
                if retries:
                    t.problems.append(f"{row.name} failed although it had retries left: {error.get('type')}")
        final = recover(t, run_id)
    return Broken(final, succeeded, marks, time.monotonic() - fault)


def kill_server(t: Trial) -> Broken:
    """SIGKILL the `flow server` (of two on PostgreSQL) that runs the run; the other adopts it."""
    assert t.postgres is not None
    from scheduler.store.models import servers as servers_table

    servers = start_servers(t.project.root, t.project.env, ["../server0", "../server1"])
    try:
        run_id = submit(t, servers[0])
        if not random_moment(t, early=0.15):
            t.notes.append("the run had not started nodes")
        run = t.project.run_row(run_id)
        with t.project.engine.connect() as conn:
            claimed = conn.execute(servers_table.select().where(servers_table.c.id == run.server)).first()
        # the server running it; one at random while it is still queued
        victim = next((s for s in servers if claimed and s.process.pid == claimed.pid), None)
        victim = victim or t.rng.choice(servers)
        t.notes.append(f"killed {'its server' if claimed else 'a server'}, the run {run.status}")
        started = descendants(victim.process.pid)
        victim.kill()
        fault = time.monotonic()
        orphans(t, started)
        succeeded, marks = at_fault(t.project, run_id)
        return pool_outcome(t, run_id, "the adopted run", succeeded, marks, fault)
    finally:
        for server in servers:
            server.stop()


def restart_postgres(t: Trial) -> float:
    """Stop PostgreSQL (as a crash), start it again 0.5-5 s later; the moment it stopped."""
    assert t.postgres is not None
    t.project.close()
    t.postgres.stop()
    fault = time.monotonic()
    down = t.rng.uniform(0.5, 5.0)
    time.sleep(down)
    t.postgres.start()
    t.notes.append(f"PostgreSQL down {down:.1f} s")
    return fault


def pg_restart(t: Trial) -> Broken:
    """Stop PostgreSQL under a running run, start it 0.5-5 s later; the run rides through. The
    run is a `flow run` (7 in 10) or a run of a two-server pool with 3 s leases, where a longer
    outage lets the other server adopt it once the database is back."""
    if t.rng.random() < 0.3:
        return pg_restart_pool(t)
    process = t.project.popen("run", "p.py", "--json")
    if not random_moment(t, process, early=0.15):
        t.notes.append("the run ended before the fault")
    run_id = current_run(t.project)
    succeeded, marks = at_fault(t.project, run_id)
    fault = restart_postgres(t)
    out, err = process.communicate(timeout=600)
    if process.returncode == 0:
        return Broken(json.loads(out)["run_id"], succeeded, marks, time.monotonic() - fault)
    last = (err.strip().splitlines() or ["(no output)"])[-1]
    run_id = current_run(t.project)
    if (
        run_id is None
        and process.returncode == 2
        and "cannot open database" in last
        and not TRACEBACK.search(err)
    ):
        # down while `flow run` opened the database, before it recorded anything: a clean exit 2
        t.notes.append(f"flow run: exit 2 before recording the run: {last}; run again")
    else:
        t.problems.append(f"the run did not ride through the restart: exit {process.returncode}: {last}")
        if TRACEBACK.search(err):
            t.notes.append(err[-3000:])
    if run_id is None:
        again = t.project.flow("run", "p.py", "--json")
        final = again.json()["run_id"] if again.code == 0 else None
    else:
        final = recover(t, run_id)
    return Broken(final, succeeded, marks, time.monotonic() - fault)


def pg_restart_pool(t: Trial) -> Broken:
    servers = start_servers(t.project.root, t.project.env, ["../server0", "../server1"])
    try:
        run_id = submit(t, servers[0])
        random_moment(t)
        succeeded, marks = at_fault(t.project, run_id)
        t.notes.append(f"a pool's run, {t.project.run_row(run_id).status}")
        fault = restart_postgres(t)
        return pool_outcome(t, run_id, "the pool's run, after the restart,", succeeded, marks, fault)
    finally:
        for server in servers:
            server.stop()


def pool_outcome(
    t: Trial, run_id: str, what: str, succeeded: set[str], marks: Counter[str], fault: float
) -> Broken:
    """A pool's run after its fault: it must end succeeded by itself; else resume it."""
    status = t.project.wait_run_finished(run_id)
    final: str | None = run_id
    if status != "succeeded":
        t.problems.append(f"{what} ended {status}")
        final = recover(t, run_id)
    return Broken(final, succeeded, marks, time.monotonic() - fault)


def submit(t: Trial, server: Server) -> str:
    done = t.project.flow("submit", "p.py", env={"FLOW_SERVER": server.url})
    if done.code != 0:
        raise RuntimeError(f"flow submit: exit {done.code}: {done.err[-2000:]}")
    return done.out.strip()


def disk_full(t: Trial) -> Broken:
    """The artifact store on a tmpfs too small for the run; then it is made bigger and resumed."""
    share = t.rng.uniform(0.15, 0.85)
    size = max(64 << 10, int(t.reference.store_bytes * share)) // 4096 * 4096
    disk = Tmpfs(t.project.root.parent / "disk", size)
    t.cleanup.append(disk.unmount)
    t.project.artifacts = disk.path / "artifacts"
    done = t.project.flow("run", "p.py", "--json")
    fault = time.monotonic()
    run_id = t.project.run_ids()[-1]
    succeeded, marks = at_fault(t.project, run_id)
    final: str | None = run_id
    if done.code == 0:
        t.notes.append(f"the store ({size} bytes) never filled")
    else:
        errors = {(r.error or {}).get("type") for r in t.project.node_rows(run_id) if r.status == "failed"}
        if errors != {"StoreFull"}:
            t.problems.append(f"a full store failed nodes with {sorted(map(str, errors))}")
        leftovers = [p for p in disk.path.rglob("*") if p.is_file() and p.name.startswith(".tmp")]
        if leftovers:
            t.problems.append(f"{len(leftovers)} temporary files left in the full store")
        disk.grow(512 << 20)
        final = recover(t, run_id)
    return Broken(final, succeeded, marks, time.monotonic() - fault)


def damage(t: Trial, digest: str, artifacts: Artifacts) -> str:
    """Flip 1-3 bits of the artifact `digest` where it is kept (a file is sometimes cut short or
    deleted instead); says what was done."""
    path = t.project.store / "objects" / digest[:2] / digest
    if digest in artifacts.inline:
        from scheduler.store.models import artifacts as table

        data = bytearray(artifacts.inline[digest])
        for _ in range(t.rng.randint(1, 3)):
            data[t.rng.randrange(len(data))] ^= 1 << t.rng.randrange(8)
        with t.project.engine.begin() as conn:
            conn.execute(update(table).where(table.c.digest == digest).values(data=bytes(data)))
        return "flipped bits of a database row"
    how = t.rng.choice(["flipped bits of", "flipped bits of", "truncated", "deleted"])
    data = bytearray(path.read_bytes())
    path.chmod(0o644)
    if how == "deleted":
        path.unlink()
        return "deleted a file"
    if how == "truncated":
        data = data[: t.rng.randrange(len(data))]
    else:
        for _ in range(t.rng.randint(1, 3)):
            data[t.rng.randrange(len(data))] ^= 1 << t.rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"{how} a file"


def corrupt(t: Trial) -> Broken:
    """Flip bytes of a stored artifact of a succeeded node, then run again or resume: it must be
    recomputed (its producer runs again), never used."""
    done = t.project.flow("run", "p.py", "--json")
    run_id = t.project.run_ids()[-1]
    if done.code != 0:
        t.problems.append(f"the fault-free first run failed: exit {done.code}")
    artifacts = Artifacts(t.project)
    files, rows = [], []
    for digest, (_run, _node, ref) in artifacts.referenced().items():
        (files if (t.project.store / "objects" / digest[:2] / digest).exists() else rows).append(digest)
        if ref["serializer"] == "manifest":  # and the elements of a stored list
            data = artifacts.data(digest, int(ref["size"])) or b"[]"
            for element in json.loads(data):
                on_disk = (t.project.store / "objects" / element[0][:2] / element[0]).exists()
                (files if on_disk else rows).append(element[0])
    pool = files if files and (not rows or t.rng.random() < 0.75) else rows
    digest = t.rng.choice(sorted(set(pool)))
    where = damage(t, digest, artifacts)
    allowed = artifact_producers(t.project, digest)
    succeeded, marks = at_fault(t.project, run_id)
    how = t.rng.choice(["rerun", "resume"])
    t.notes.append(f"{where} ({digest[:12]}, of {sorted(allowed)}), then {how}")
    fault = time.monotonic()
    if how == "rerun":
        again = t.project.flow("run", "p.py", "--json")
        final = again.json()["run_id"] if again.code == 0 else None
        if final is None:
            t.problems.append(f"the rerun failed: exit {again.code}: {again.err.strip()[-300:]}")
        # a rerun executes cache=False nodes anew by definition
        allowed |= {n for n in t.dag.nodes if not t.dag.node_op(n).cache}
    else:
        final = recover(t, run_id)
    return Broken(final, succeeded, marks, time.monotonic() - fault, allowed)


FAULTS: dict[str, Callable[[Trial], Broken]] = {
    "kill-run": kill_run,
    "kill-worker": kill_worker,
    "kill-server": kill_server,
    "pg-restart": pg_restart,
    "disk-full": disk_full,
    "corrupt": corrupt,
}


def run_trial(
    kind: str, seed: int, dag: Dag, reference: Reference, folder: Path, postgres: Postgres | None
) -> Outcome:
    """One trial of `kind` on `dag` in `folder` (a fresh folder), every check applied."""
    rng = random.Random(f"{seed}:{kind}")
    project = Project(folder / "proj")
    project.setup(dag.source(), "[server]\nlease_seconds = 3\n")
    database = None
    if kind in ("kill-server", "pg-restart"):
        assert postgres is not None
        database = project.db_url = postgres.create_database()
    t = Trial(kind, seed, dag, reference, project, postgres, rng)
    try:
        broken = FAULTS[kind](t)
        left = outliving(started_with("CHAOS_MARKS", str(project.marks_file)), 10)
        if left:
            t.problems.append(f"{len(left)} processes left running after recovery")
            kill_all(left)
        lost = lost_outputs(project, broken.final, reference.outputs)
        again = reexecuted(broken.marks, project.executions(), broken.succeeded, broken.allowed)
        bad = Artifacts(project).bad()
        problems = integrity(project)
        recovery = broken.recovery_s if broken.final is not None else None
    except Exception as exc:  # a trial that could not finish counts as lost
        t.problems.append(f"the trial itself failed: {type(exc).__name__}: {exc}")
        t.notes.append(traceback.format_exc())
        lost, again, bad, problems, recovery = sorted(reference.outputs), [], [], [], None
    finally:
        project.close()
        for step in t.cleanup:
            step()
        if database is not None and postgres is not None:
            postgres.drop_database(database)
    return Outcome(kind, seed, len(dag.nodes), lost, again, bad, problems, t.problems, t.notes, recovery)
