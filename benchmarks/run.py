"""flowlib's benchmark table (run by hand): scheduling overhead, caching, build, artifacts.

    .venv/bin/python -m benchmarks [--sizes 100,1000,10000] [--executors inline,local] [--repeat 3]
                                   [--quick] [--peers] [--skip-artifacts]
    .venv/bin/python -m benchmarks --scale ...   (benchmarks/scale.py: maps of 10^4..10^6 items)

Every DAG row is a real `flow run` (a fresh process, SQLite in a fresh FLOW_HOME,
fsync on, --no-cache) of no-op operators; "ms/node" is wall time over node count,
so it includes interpreter start and the run's recording. Medians of --repeat runs.
Peak RSS is the scheduler process's (workers are separate processes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.shapes import PIPELINES

REPO = Path(__file__).resolve().parents[1]
FLOW = str(Path(sys.executable).with_name("flow"))

# Runs `flow` (its console-script entry point) and reports the scheduler's peak RSS (MiB) on
# stderr's last line.
_MEASURED_FLOW = """
import resource, sys
from flowlib.cli.main import main
sys.argv = ["flow", *sys.argv[1:]]
try:
    main()
finally:
    print("PEAK_RSS_MIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)
"""


def flow_run(
    shape: str,
    n: int,
    executor: str,
    *,
    cached: bool = False,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> tuple[float, float]:
    """Return (wall seconds, scheduler peak RSS MiB) of one `flow run` with the flowlib that `python`
    has installed; with `cached`, of the second run."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "flow.toml").write_text("")
        (root / "p.py").write_text(PIPELINES[shape])
        extra = env or {}
        env = {**os.environ, "FLOW_HOME": str(root / ".flow")}
        # as a user's shell has it: this machine sets both (unbuffered output costs a write per line)
        for key in (
            "FLOW_DB_URL",
            "FLOW_ARTIFACTS",
            "FLOW_EXECUTOR",
            "PYTHONUNBUFFERED",
            "PYTHONDONTWRITEBYTECODE",
        ):
            env.pop(key, None)
        env.update(extra)
        argv = [
            python,
            "-c",
            _MEASURED_FLOW,
            "run",
            "p.py",
            "-p",
            f"n={n}",
            "--executor",
            executor,
            "--json",
        ]
        if not cached:
            argv.append("--no-cache")
        else:
            subprocess.run(argv, cwd=root, env=env, capture_output=True, check=True)
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{shape} n={n} {executor} failed:\n{done.stderr[-3000:]}")
        peak = float(done.stderr.rsplit("PEAK_RSS_MIB", 1)[1].split()[0])
        return wall, peak


def command_time(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def row(
    what: str,
    nodes: int | str,
    executor: str,
    wall: float,
    per_node: float | None,
    rss: float | None,
    marginal: float | None = None,
) -> None:
    def cell(value: float | None, width: int, digits: int) -> str:
        return f"{value:{width}.{digits}f}" if value is not None else f"{'':>{width}}"

    print(
        f"{what:<22} {nodes!s:>7} {executor:<8} {wall:8.2f} {cell(per_node, 9, 3)} {cell(marginal, 9, 3)} "
        f"{cell(rss, 8, 0)}",
        flush=True,
    )


def main() -> None:
    if "--scale" in sys.argv[1:]:
        from benchmarks import scale

        scale.main([arg for arg in sys.argv[1:] if arg != "--scale"])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--executors", default="inline,local")
    parser.add_argument("--shapes", default="fan-out,chain,diamond")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="sizes 100,1000 and one repeat")
    parser.add_argument("--peers", action="store_true", help="also run the peers (installs their own venv)")
    parser.add_argument("--skip-artifacts", action="store_true", help="skip the 1 GiB tensor row")
    args = parser.parse_args()
    # as an installed wheel has them: this machine's PYTHONDONTWRITEBYTECODE would otherwise
    # leave every run compiling flowlib's changed modules again
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            *(str(REPO / p) for p in ("flowlib", "scheduler", "executors")),
        ],
        check=True,
    )
    sizes = [100, 1000] if args.quick else [int(x) for x in args.sizes.split(",")]
    repeat = 1 if args.quick else args.repeat
    print(f"flowlib benchmarks: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, median of {repeat}")
    print("ms/node: wall over nodes; marginal: (wall - the quickest 1-node run's wall) over nodes")
    print(
        f"{'what':<22} {'nodes':>7} {'executor':<8} {'wall s':>8} {'ms/node':>9} {'marginal':>9} {'RSS MiB':>8}"
    )
    executors = args.executors.split(",")
    # the quickest of several: start-up is short, so noise only ever adds to it
    start_up = {e: min(flow_run("fan-out", 1, e)[0] for _ in range(max(repeat, 5))) for e in executors}
    for executor in executors:
        row("1-node run (start-up)", 1, executor, start_up[executor], None, None)
    per_node: dict[tuple[str, int, str], float] = {}
    for shape in args.shapes.split(","):
        for n in sizes:
            for executor in executors:
                runs = [flow_run(shape, n, executor) for _ in range(repeat)]
                wall = statistics.median(r[0] for r in runs)
                marginal = 1000 * max(0.0, wall - start_up[executor]) / n
                per_node[(shape, n, executor)] = marginal
                row(shape, n, executor, wall, 1000 * wall / n, max(r[1] for r in runs), marginal)
    biggest = max(sizes)
    runs = [flow_run("fan-out", biggest, "local", cached=True) for _ in range(repeat)]
    wall = statistics.median(r[0] for r in runs)
    marginal = 1000 * max(0.0, wall - start_up.get("local", 0.0)) / biggest
    row(
        "fan-out, fully cached",
        biggest,
        "local",
        wall,
        1000 * wall / biggest,
        max(r[1] for r in runs),
        marginal,
    )
    build = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "build_dag.py"),
            "--one",
            "map",
            "--nodes",
            "100000",
            "--repeat",
            str(repeat),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    built = json.loads(build.stdout)
    row("DAG build (map)", built["nodes"], "-", built["build_s"], None, built["maxrss_mib"])
    row("flow --help", "-", "-", command_time([FLOW, "--help"], 5), None, None)
    row("import flowlib", "-", "-", command_time([sys.executable, "-c", "import flowlib"], 5), None, None)
    row("python (bare)", "-", "-", command_time([sys.executable, "-c", "pass"], 5), None, None)
    if not args.skip_artifacts:
        print("--- artifacts (benchmarks/artifacts.py) ---", flush=True)
        subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "artifacts.py"), "--repeat", str(repeat)], check=True
        )
    if args.peers:
        from benchmarks.peers import compare

        compare(per_node, sizes, repeat)


if __name__ == "__main__":
    main()
