"""Scale: a no-op map of 10^4 .. 10^6 items plus a sum, run, rerun from the cache, and built.

    .venv/bin/python -m benchmarks --scale [--sizes 10000,100000,1000000] [--repeat 1]
                                           [--python OTHER/bin/python [--other-sizes 10000,100000]]

Every row is a real `flow run --executor local` (a fresh process, SQLite in a fresh FLOW_HOME,
fsync on). "RSS" is the scheduler's peak (workers are separate processes); ".flow" is what the
run left on disk (database, its log, artifacts); "B/node" is the database's share over the
nodes recorded; "wrote" is what the scheduler process wrote to storage (/proc/self/io). The
cached row is the second run in the same home. "build" is `Workflow.build` plus `compile_dag`
of the map in a fresh interpreter. With --python, the same rows for another install (a
baseline checkout's venv) follow, run after ours size by size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import flow_run

PIPELINE = """
from flowlib import operator, workflow

@operator
def leaf(i: int) -> int:
    return i

@operator
def total(xs: list[int]) -> int:
    return sum(xs)

@workflow
def big(n: int) -> int:
    return total(leaf.map(list(range(n))))
"""

# Runs `flow` and reports the scheduler's peak RSS (MiB) and bytes written on stderr's last lines.
MEASURED_FLOW = """
import resource, sys
from flowlib.cli.main import main
sys.argv = ["flow", *sys.argv[1:]]
try:
    main()
finally:
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    print("PEAK_RSS_MIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)
    print("WRITE_BYTES", io["write_bytes"], file=sys.stderr)
"""

BUILD = """
import resource, sys, time
sys.path.insert(0, sys.argv[2])
from flowlib.loading import select_workflow
wf = select_workflow(sys.argv[2] + "/p.py")
started = time.perf_counter()
dag = wf.build(n=int(sys.argv[1]))
try:
    from flowlib.compile import compile_dag
except ImportError:  # an install from before plans
    compile_dag = None
if compile_dag is not None:
    compile_dag(dag)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _db_size(home: Path) -> int:
    return sum(p.stat().st_size for p in home.glob("flow.db*"))


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONUNBUFFERED", None)
    return {**env, "FLOW_HOME": str(root / ".flow")}


def _flow(python: str, root: Path, n: int) -> dict[str, float]:
    argv = [python, "-c", MEASURED_FLOW, "run", "p.py", "-p", f"n={n}", "--executor", "local", "--json"]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=root, env=_env(root), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"n={n} failed:\n{done.stderr[-3000:]}")
    tail = done.stderr.rsplit("PEAK_RSS_MIB", 1)[1].split()
    return {"wall": wall, "rss": float(tail[0]), "wrote": float(tail[2])}


def measure(python: str, n: int) -> dict[str, float]:
    """One size: first run, cached rerun and build, in a fresh project folder."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "flow.toml").write_text("")
        (root / "p.py").write_text(PIPELINE)
        first = _flow(python, root, n)
        home = root / ".flow"
        on_disk, db = _size(home), _db_size(home)
        cached = _flow(python, root, n)
        grown = _size(home) - on_disk
        built = subprocess.run(
            [python, "-c", BUILD, str(n), str(root)],
            env=_env(root),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    return {
        "wall": first["wall"],
        "rss": first["rss"],
        "disk_mb": on_disk / 1e6,
        "db_per_node": db / (n + 2),
        "cached_wall": cached["wall"],
        "cached_rss": cached["rss"],
        "cached_wrote_mb": max(cached["wrote"], grown) / 1e6,
        "build": float(built[0]),
    }


def table(label: str, python: str, sizes: list[int], repeat: int) -> None:
    print(f"--- {label}: {python}", flush=True)
    print(
        f"{'n':>9} {'wall s':>8} {'ms/node':>8} {'RSS MiB':>8} {'.flow MB':>9} {'B/node':>7} "
        f"{'cached s':>9} {'c. RSS':>7} {'c. wrote MB':>12} {'build s':>8}",
        flush=True,
    )
    for n in sizes:
        runs = [measure(python, n) for _ in range(repeat)]

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        print(
            f"{n:>9,} {med('wall'):8.2f} {1000 * med('wall') / n:8.3f} {med('rss'):8.0f} "
            f"{med('disk_mb'):9.1f} {med('db_per_node'):7.0f} {med('cached_wall'):9.2f} "
            f"{med('cached_rss'):7.0f} {med('cached_wrote_mb'):12.2f} {med('build'):8.2f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--python", default=None, help="another install's python, for a before/after table")
    parser.add_argument("--other-sizes", default="10000,100000", help="the sizes to run with --python")
    args = parser.parse_args(argv)
    print(f"scale: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, median of {args.repeat}")
    table("this checkout", sys.executable, [int(x) for x in args.sizes.split(",")], args.repeat)
    if args.python:
        table("other install", args.python, [int(x) for x in args.other_sizes.split(",")], args.repeat)
    print("--- a 1,000-step chain, local (ms a step: wall less a 1-node run's, over 1,000)")
    for label, python in [("this checkout", sys.executable)] + (
        [("other install", args.python)] if args.python else []
    ):
        for _ in range(args.repeat):
            start_up = min(flow_run("fan-out", 1, "local", python=python)[0] for _ in range(3))
            chain = statistics.median(flow_run("chain", 1000, "local", python=python)[0] for _ in range(3))
            print(f"{label:<14} {chain:6.2f} s  {(chain - start_up):6.3f} ms/step", flush=True)


if __name__ == "__main__":
    main()
