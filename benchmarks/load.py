"""Load on a pool of servers (run by hand): 2 `flow server` processes on one database, many
concurrent submissions of 100-node DAGs; then the same with one server SIGKILLed half-way.

    .venv/bin/python -m benchmarks.load [--runs 50] [--db postgresql+psycopg://...] [--sqlite]
    .venv/bin/python -m benchmarks.load --overhead 3

Without --db a throwaway PostgreSQL is started (initdb and pg_ctl must be installed).
Every operator appends "run node" to a file when it really executes, so executions are
counted by the operators themselves. Prints a table: all runs succeeded, executions, nodes
executed more than once ("ran twice": those running on the killed server, or done there but
not yet committed, run again where the run is adopted; "succeeded, ran again": those among the
nodes committed as succeeded before the kill, which must be 0), claims per run, adoptions,
submit-to-start latency (median, p95), nodes per second. The kill comes once half the runs
succeeded, while the killed server is running one. With --overhead, only one `flow run`
(10,000-node fan-out, 1,000-node chain) on PostgreSQL against SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOW = str(Path(sys.executable).with_name("flow"))
PIPELINE = """
import os
from flowlib import current, operator, workflow

def mark() -> None:
    with open(os.environ["LOAD_MARKS"], "a") as marks:
        marks.write(f"{current.run_id} {current.node}\\n")

@operator
def prepare(tag: int) -> int:
    mark()
    return tag

@operator
def item(i: int, base: int) -> int:
    mark()
    return i + base

@operator
def total(xs: list[int]) -> int:
    mark()
    return sum(xs)

@workflow
def dag(tag: int = 0) -> int:
    base = prepare(tag)
    return total(item.map(list(range(98)), base=base))
"""
EXECUTIONS_PER_RUN = 100  # prepare, 98 items, total


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, method: str = "GET", body: object = None, raw: bytes | None = None) -> object:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"null")


def start_server(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [FLOW, "server", "--no-auth", "--port", str(port), "--max-runs", "4"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(root / f"server-{port}.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            call(url + "/api/health")
            return process, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server on {url} did not start")


def compile_plans(root: Path, count: int, first: int) -> list[dict]:
    code = (
        "import json, sys\n"
        "from flowlib.compile import compile_dag\n"
        "from flowlib.loading import select_workflow\n"
        "wf = select_workflow('p.py', 'dag')\n"
        "first, count = int(sys.argv[1]), int(sys.argv[2])\n"
        "print(json.dumps([compile_dag(wf.build(tag=i)).to_json() for i in range(first, first + count)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(first), str(count)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def snapshot(root: Path) -> bytes:
    sys.path.insert(0, str(REPO))
    from scheduler.server.snapshots import pack

    return pack(root, 50)


def phase(db_url: str, runs: int, kill_half_way: bool) -> dict[str, object]:
    """One round of load; its DAGs are new to the database (tags never used before), so nothing is cached."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "flow.toml").write_text("[executors.local]\nworkers = 2\n[server]\nlease_seconds = 3\n")
        (root / "p.py").write_text(PIPELINE)
        marks = root / "marks.txt"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
        env.update(FLOW_HOME=str(root / ".flow"), FLOW_DB_URL=db_url, LOAD_MARKS=str(marks))
        plans = compile_plans(root, runs, first=int(time.time() * 1000) % 10**9)
        data = snapshot(root)
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        servers = [start_server(root, env) for _ in range(2)]
        call(f"{servers[0][1]}/api/snapshots/{digest}", "PUT", raw=data)
        run_ids: list[str] = []
        lock = threading.Lock()

        def submit(plan: dict, url: str) -> None:
            run = call(f"{url}/api/runs", "POST", {"plan": plan, "snapshot": digest})
            with lock:
                run_ids.append(run["run_id"])  # type: ignore[index]

        started = time.monotonic()
        threads = [
            threading.Thread(target=submit, args=(plan, servers[i % 2][1])) for i, plan in enumerate(plans)
        ]
        for thread in threads:
            thread.start()
        killed = False
        done_before: set[tuple[str, str]] = set()
        victim = call(f"{servers[0][1]}/api/health")["server"]  # type: ignore[index]
        survivor = servers[1][1]
        while True:  # watched while submissions still arrive: a run takes well under a second
            with lock:
                known = list(run_ids)
            states, busy, done = _states(db_url, known, victim)
            if kill_half_way and not killed and states["succeeded"] >= runs // 2:
                done_before = done
                if busy:  # half-way, and while it runs something
                    os.killpg(servers[0][0].pid, signal.SIGKILL)
                    killed = True
            ended = states["succeeded"] + states["failed"] + states["cancelled"]
            if ended == runs and not any(thread.is_alive() for thread in threads):
                break
            time.sleep(0.1)
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        shown = [call(f"{survivor}/api/runs/{r}") for r in run_ids]
        for process, _ in servers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
        executions = Counter(tuple(line.split()) for line in marks.read_text().splitlines())
        latencies = sorted(run["started_at"] - run["created_at"] for run in shown)  # type: ignore[index]
        claims = _claims(db_url, run_ids, "run_running")
        adopted = _claims(db_url, run_ids, "run_adopted")
    return {
        "runs": runs,
        "succeeded": sum(1 for run in shown if run["status"] == "succeeded"),  # type: ignore[index]
        "executions": sum(executions.values()),
        "expected": runs * EXECUTIONS_PER_RUN,
        "ran twice": sum(1 for count in executions.values() if count > 1),
        "succeeded, ran again": sum(1 for key in done_before if executions[key] > 1),
        "claims per run": dict(Counter(claims.values())),
        "server killed": killed,
        "runs adopted": len(adopted),
        "latency median s": statistics.median(latencies),
        "latency p95 s": latencies[int(0.95 * (len(latencies) - 1))],
        "wall s": wall,
        "nodes/s": runs * EXECUTIONS_PER_RUN / wall,
    }


def _states(db_url: str, run_ids: list[str], server: str) -> tuple[Counter, int, set[tuple[str, str]]]:
    """The runs' statuses, how many `server` is running, and every node committed as succeeded
    (read from the database: the API's run objects carry every node, too slow to poll)."""
    sys.path.insert(0, str(REPO))
    from sqlalchemy import func, select

    from scheduler.store import db
    from scheduler.store.models import nodes, runs

    engine = db.connect(db_url)
    with engine.connect() as conn:
        states = Counter(
            dict(
                conn.execute(
                    select(runs.c.status, func.count()).where(runs.c.id.in_(run_ids)).group_by(runs.c.status)
                ).all()
            )
        )
        busy = conn.scalar(select(func.count()).where(runs.c.server == server, runs.c.status == "running"))
        done = conn.execute(
            select(nodes.c.run_id, nodes.c.name).where(
                nodes.c.run_id.in_(run_ids), nodes.c.status == "succeeded"
            )
        )
        found = {(row.run_id, row.name) for row in done}
    engine.dispose()
    return states, int(busy or 0), found


def _claims(db_url: str, run_ids: list[str], kind: str) -> dict[str, int]:
    """Per run, how many events of `kind` (a claim is `run_running`, an adoption `run_adopted`)."""
    sys.path.insert(0, str(REPO))
    from sqlalchemy import func, select

    from scheduler.store import db
    from scheduler.store.models import events

    engine = db.connect(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(events.c.run_id, func.count())
            .where(events.c.run_id.in_(run_ids), events.c.kind == kind)
            .group_by(events.c.run_id)
        ).all()
    engine.dispose()
    return dict(rows)  # type: ignore[arg-type]


def throwaway_postgres() -> str:
    """A fresh database on the tests' throwaway server."""
    sys.path.insert(0, str(REPO / "tests"))
    import pg  # the tests' throwaway server

    server = pg.server_url()
    if server is None:
        raise SystemExit(pg.why_unavailable())
    return pg.create_database(server)


def one_run_overhead(repeat: int) -> None:
    """One `flow run` of a 10,000-node fan-out and a 1,000-node chain (local) on PostgreSQL and on
    SQLite, interleaved, each on a fresh database (PostgreSQL's schema made by a 1-node run first,
    as a shared database has it): the per-node cost of the database alone."""
    from benchmarks.run import flow_run

    print(f"one flow run, local, median wall s of {repeat} interleaved (each on a fresh database)")
    print(f"{'shape':<8} {'nodes':>6} {'sqlite':>8} {'postgres':>9} {'pg/sqlite':>10}")
    for shape, n in (("fan-out", 10_000), ("chain", 1_000)):
        lite, pg = [], []
        for _ in range(repeat):
            lite.append(flow_run(shape, n, "local")[0])
            env = {"FLOW_DB_URL": throwaway_postgres()}
            flow_run("chain", 1, "local", env=env)  # the schema, as a shared database has it
            pg.append(flow_run(shape, n, "local", env=env)[0])
        a, b = statistics.median(lite), statistics.median(pg)
        print(f"{shape:<8} {n:>6} {a:>8.2f} {b:>9.2f} {b / a:>10.2f}")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--sqlite", action="store_true", help="also the same load on one SQLite file")
    parser.add_argument(
        "--overhead",
        type=int,
        metavar="REPEAT",
        default=0,
        help="only compare one run's time on PostgreSQL and SQLite, REPEAT times interleaved",
    )
    args = parser.parse_args()
    if args.overhead:
        one_run_overhead(args.overhead)
        return
    url = args.db or throwaway_postgres()
    rows = [("postgresql", False, url), ("postgresql, one server killed", True, url)]
    if args.sqlite:
        with tempfile.TemporaryDirectory() as folder:
            rows.append(("sqlite", False, f"sqlite:///{folder}/flow.db"))
            _print(rows, args.runs)
            return
    _print(rows, args.runs)


def _print(rows: list[tuple[str, bool, str]], runs: int) -> None:
    print(f"{runs} concurrent submissions of {EXECUTIONS_PER_RUN}-node DAGs to 2 servers (2 workers each)")
    for label, kill, url in rows:
        result = phase(url, runs, kill)
        print(f"--- {label}")
        for key, value in result.items():
            shown = f"{value:.2f}" if isinstance(value, float) else value
            print(f"  {key:<18} {shown}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
