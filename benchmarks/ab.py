"""Compare two installs of flowlib on the same shapes, runs interleaved (run by hand).

    .venv/bin/python -m benchmarks.ab OTHER_PYTHON [--sizes 1000,10000] [--shapes fan-out,chain]
                                      [--executors local] [--repeat 5]

OTHER_PYTHON is the interpreter of another checkout's venv (say, the commit before a change).
Each repetition runs A and B back to back, A first in one repetition and B first in the next
(whichever runs second pays for the first one's disk writes being flushed), so the machine's
drift hits both alike; the table gives each one's median wall time and B over A.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.run import flow_run


def compile_install(python: str) -> None:
    """Compile the install's modules, as an installed wheel has them."""
    root = subprocess.run(
        [python, "-c", "import flowlib, pathlib; print(pathlib.Path(flowlib.__file__).parents[1])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    folders = [str(Path(root) / name) for name in ("flowlib", "scheduler", "executors")]
    subprocess.run([python, "-m", "compileall", "-q", *folders], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("other", help="the interpreter of the install to compare with (B)")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--shapes", default="fan-out,chain")
    parser.add_argument("--executors", default="local")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cached", action="store_true", help="also the fully cached re-run of the fan-out")
    args = parser.parse_args()
    a, b = sys.executable, args.other
    for python in (a, b):
        compile_install(python)
    print(f"A = {a}\nB = {b}\nmedian wall seconds of {args.repeat}, runs interleaved A, B, B, A, A, B, ...")
    print(f"{'shape':<12} {'nodes':>7} {'executor':<8} {'A s':>8} {'B s':>8} {'B/A':>6}")
    cases = [
        (shape, int(n), executor, False)
        for shape in args.shapes.split(",")
        for n in args.sizes.split(",")
        for executor in args.executors.split(",")
    ]
    if args.cached:
        cases.append(("fan-out", max(int(n) for n in args.sizes.split(",")), "local", True))
    for shape, n, executor, cached in cases:
        times: dict[str, list[float]] = {a: [], b: []}
        for repetition in range(args.repeat):
            for python in (a, b) if repetition % 2 == 0 else (b, a):
                times[python].append(flow_run(shape, n, executor, cached=cached, python=python)[0])
        ta, tb = statistics.median(times[a]), statistics.median(times[b])
        label = shape + (" cached" if cached else "")
        print(f"{label:<12} {n:>7} {executor:<8} {ta:8.3f} {tb:8.3f} {tb / ta:6.2f}", flush=True)


if __name__ == "__main__":
    main()
