"""How fast the web UI's pages render on the server, with 10,000 runs in the database and a run
of 10,000 nodes (a map of 10,000 items), through a real `flow server` over HTTP.

.venv/bin/python benchmarks/ui.py [--runs 10000] [--items 10000] [--repeat 7]

It runs the big workflow once with the inline executor, adds the other runs as rows (each
with parameters and two metrics), starts a server and times each page. The goal: every page
under 300 ms; the run page's live fragment the same size whatever the number of nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FLOW = str(Path(sys.executable).with_name("flow"))
PIPELINE = """
from flowlib import current, operator, workflow

@operator
def numbers(n: int) -> list[int]:
    return list(range(n))

@operator
def train(i: int, lr: float) -> float:
    current.log_metric("loss", lr / (i + 1))
    return i * lr

@workflow
def big(n: int = 10, lr: float = 0.1) -> list[float]:
    return train.map(numbers(n), lr=lr)
"""


def run_flow(root: Path, env: dict[str, str], *args: str) -> str:
    """Run the workflow; return its run id (read back, so its outputs are never loaded here)."""
    subprocess.run([FLOW, "run", "p.py", *args], cwd=root, env=env, capture_output=True, check=True)
    listed = subprocess.run(
        [FLOW, "runs", "--limit", "1", "--json"], cwd=root, env=env, capture_output=True, check=True
    )
    return json.loads(listed.stdout)[0]["run_id"]


def add_runs(db: Path, count: int, template_id: str) -> None:
    """`count` more finished runs like the template (as rows: running them would take an hour)."""
    from sqlalchemy import create_engine, insert, select

    from scheduler.store.models import metrics, runs

    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        template = dict(conn.execute(select(runs).where(runs.c.id == template_id)).first()._mapping)
        rng = random.Random(7)
        now = time.time()
        rows, metric_rows = [], []
        for i in range(count):
            started = now - 86_400 * 30 + i * 200
            status = rng.choice(["succeeded"] * 8 + ["failed", "cancelled"])
            run_id = f"{i:012x}"
            rows.append(
                {
                    **template,
                    "id": run_id,
                    "root_run_id": run_id,
                    "workflow": rng.choice(["big", "train", "evaluate", "prepare"]),
                    "user": rng.choice(["ada", "bob", "cy", "dee"]),
                    "status": status,
                    "params": {
                        "n": rng.randint(1, 100),
                        "lr": rng.choice([0.1, 0.05, 0.01]),
                        "tag": f"t{i % 17}",
                    },
                    "created_at": started,
                    "started_at": started,
                    "ended_at": started + rng.uniform(1, 500),
                    "error": "boom" if status == "failed" else None,
                    "outputs": None,
                }
            )
            for name in ("loss", "score"):
                metric_rows.append(
                    {
                        "run_id": run_id,
                        "node": "total",
                        "attempt": 1,
                        "name": name,
                        "value": rng.random(),
                        "step": None,
                        "time": started,
                    }
                )
        conn.execute(insert(runs), rows)
        conn.execute(insert(metrics), metric_rows)
    engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
        assert response.status == 200, (url, response.status)
    return (time.perf_counter() - start) * 1000, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "flow.toml").write_text("")
        (root / "p.py").write_text(PIPELINE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
        env["FLOW_HOME"] = str(root / ".flow")
        began = time.perf_counter()
        small = run_flow(root, env, "-p", "n=10", "--executor", "inline")
        big = run_flow(root, env, "-p", f"n={args.items}", "--executor", "inline")
        print(f"ran a {args.items:,}-item map in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        add_runs(root / ".flow" / "flow.db", args.runs - 2, small)
        port = free_port()
        server = subprocess.Popen(
            [FLOW, "server", "--no-auth", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(150):
                try:
                    fetch(base + "/api/health")
                    break
                except OSError:
                    time.sleep(0.2)
            pages = [
                ("runs page (newest 50 of 10,000)", "/runs"),
                ("runs page, page 150", "/runs?page=150"),
                ("runs page, sorted by duration", "/runs?sort=duration&desc=1"),
                ("runs page, filtered by workflow+user", "/runs?workflow=train&user=bob"),
                ("runs page, filtered by status", "/runs?status=failed"),
                ("runs page, filtered by parameter", "/runs?param=lr%3D0.05"),
                ("runs page, live table fragment", "/runs/table"),
                (f"run page, {args.items:,}-node run", f"/runs/{big}"),
                (f"run page live fragment, {args.items:,} nodes", f"/runs/{big}/live"),
                ("run page live fragment, 10 nodes", f"/runs/{small}/live"),
                (f"node page, the map of {args.items:,}", f"/runs/{big}/nodes/train"),
                ("node page, one item", f"/runs/{big}/nodes/train%5B5000%5D"),
                ("compare, two runs", f"/compare?runs={big},{small}"),
            ]
            print("\n| page | median ms | min ms | KB |\n| --- | ---: | ---: | ---: |")
            for label, path in pages:
                fetch(base + path)  # warm: templates compiled, the plan's layout cached
                times, size = [], 0
                for _ in range(args.repeat):
                    took, size = fetch(base + path)
                    times.append(took)
                print(f"| {label} | {statistics.median(times):.0f} | {min(times):.0f} | {size / 1024:.0f} |")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
