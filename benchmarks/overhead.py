"""Scheduling + persistence overhead of `flow run` on no-op DAGs (run by hand, prints a table).

    .venv/bin/python benchmarks/overhead.py [--sizes 100,1000,10000] [--executors inline,local] [--repeat 3]

Each cell is the median wall time of `flow run` (a fresh process, SQLite in a
fresh FLOW_HOME, --no-cache) and that time divided by the node count.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOW = str(Path(sys.executable).with_name("flow"))

PIPELINES = {
    "fan-out": """
from flowlib import operator, workflow

@operator
def noop(i: int) -> int:
    return i

@workflow
def shape(n: int) -> list[int]:
    return noop.map(list(range(n)))
""",
    "chain": """
from flowlib import operator, workflow

@operator
def step(i: int) -> int:
    return i + 1

@workflow
def shape(n: int) -> int:
    value = 0
    for _ in range(n):
        value = step(value)
    return value
""",
}


def time_run(shape: str, n: int, executor: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "flow.toml").write_text("[flow]\nfsync = false\n" if "--no-fsync" in extra else "")
        (root / "p.py").write_text(PIPELINES[shape])
        env = {"FLOW_HOME": str(root / ".flow"), "PATH": "/usr/bin:/bin"}
        started = time.perf_counter()
        done = subprocess.run(
            [FLOW, "run", "p.py", "-p", f"n={n}", "--executor", executor, "--no-cache", "--json"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{shape} n={n} {executor} failed:\n{done.stderr[-2000:]}")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--executors", default="inline,local")
    parser.add_argument("--shapes", default="fan-out,chain")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-fsync", action="store_true", help="set [flow] fsync = false")
    args = parser.parse_args()
    extra = ["--no-fsync"] if args.no_fsync else []
    print(f"{'shape':<8} {'nodes':>6} {'executor':<8} {'wall s':>8} {'ms/node':>8}")
    for shape in args.shapes.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            if shape == "chain" and n > 1000:
                continue  # a 10,000-deep chain is a build-recursion test, not a scheduling one
            for executor in args.executors.split(","):
                times = [time_run(shape, n, executor, extra) for _ in range(args.repeat)]
                wall = statistics.median(times)
                print(f"{shape:<8} {n:>6} {executor:<8} {wall:>8.2f} {1000 * wall / n:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
