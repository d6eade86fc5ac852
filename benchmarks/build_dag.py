"""Build a 100,000-node fan-out workflow and print build time and peak memory.

    .venv/bin/python benchmarks/build_dag.py [--nodes 100000] [--repeat 3]

Two shapes: a list comprehension of operator calls (`[inc(i) for i in range(n)]`) and
`inc.map(list(range(n)))`. Each shape runs in a fresh interpreter, so ru_maxrss is its own:
`repeat` timed builds (median reported; `+graph` adds building the networkx graph), then one
build under tracemalloc for the peak of Python allocations. The bar: under 5 s and under 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

from flowlib import operator, workflow


@operator
def inc(x: int) -> int:
    return x + 1


@workflow
def fan(n: int) -> list[int]:
    return [inc(i) for i in range(n)]


@workflow
def fan_map(n: int) -> list[int]:
    return inc.map(list(range(n)))


SHAPES = {"calls": fan, "map": fan_map}


def measure(shape: str, nodes: int, repeat: int) -> dict[str, float]:
    wf = SHAPES[shape]
    builds, with_graph = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        dag = wf.build(n=nodes)
        built = time.perf_counter()
        dag.graph  # noqa: B018 (networkx graph, built on first use)
        with_graph.append(time.perf_counter() - start)
        builds.append(built - start)
        count = len(dag.nodes)
        del dag
    tracemalloc.start()
    dag = wf.build(n=nodes)
    dag.graph  # noqa: B018
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "nodes": count,
        "build_s": statistics.median(builds),
        "graph_s": statistics.median(with_graph),
        "traced_peak_mib": peak / 2**20,
        "maxrss_mib": maxrss_kib / 2**10,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", choices=list(SHAPES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.nodes, args.repeat)))
        return
    header = f"{'shape':<8} {'nodes':>8} {'build s':>8} {'+graph s':>9} {'traced MiB':>11} {'maxrss MiB':>11}"
    print(f"python {sys.version.split()[0]}, median of {args.repeat} builds; bar: < 5 s, < 1024 MiB")
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                shape,
                "--nodes",
                str(args.nodes),
                "--repeat",
                str(args.repeat),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(done.stdout)
        print(
            f"{shape:<8} {row['nodes']:>8} {row['build_s']:>8.2f} {row['graph_s']:>9.2f} "
            f"{row['traced_peak_mib']:>11.0f} {row['maxrss_mib']:>11.0f}"
        )


if __name__ == "__main__":
    main()
