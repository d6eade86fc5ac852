"""Per-node overhead of the `ray` executor on a local Ray (run by hand, prints a table).

    .venv/bin/python benchmarks/executor_overhead_ray.py [--nodes 100] [--repeat 3] [--cpus 2]

Starts one local Ray (`num_cpus=cpus`) in this process, as `flow run` would on
demand, and prints how long that took; each run then finds it initialised and
reuses it, so the table holds per-run and per-node costs, not Ray's start-up.
Two no-op DAGs run through `flowlib.run(..., executor=E, cache=False)`: a fan-out
(`noop.map`, N nodes) and a chain (N nodes, each waiting for the last). Each cell
is the median wall time of `repeat` runs and that time divided by N; `local`
(with `cpus` workers) runs in the same harness for comparison. A chain shows the
latency of one Ray task end to end (submit, run in a warm Ray worker, result and
events back); a fan-out shows throughput with `cpus` tasks in flight.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.shapes import FAN_AND_CHAIN as PIPELINE


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--executors", default="ray,local")
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        raise SystemExit("Ray is not installed: pip install ray") from None
    import flowlib
    from flowlib.loading import load_module

    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / "flow.toml").write_text(
            f"[flow]\nfsync = false\n\n[executors.local]\nworkers = {args.cpus}\n"
        )
        (project / "bench_pipeline.py").write_text(PIPELINE)
        os.chdir(project)
        os.environ["FLOW_HOME"] = str(project / ".flow")
        module = load_module(project / "bench_pipeline.py")

        started = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=args.cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        print(
            f"ray {ray.__version__}: local Ray with num_cpus={args.cpus} started in "
            f"{time.perf_counter() - started:.2f} s (not in the table)"
        )
        try:
            print(f"{'shape':<8} {'nodes':>6} {'executor':<8} {'wall s':>8} {'ms/node':>8}")
            for shape in ("fan", "chain"):
                for executor in args.executors.split(","):
                    times = []
                    for _ in range(args.repeat):
                        begun = time.perf_counter()
                        result = flowlib.run(
                            getattr(module, shape), {"n": args.nodes}, executor=executor, cache=False
                        )
                        times.append(time.perf_counter() - begun)
                        if result.status != "succeeded":
                            raise SystemExit(f"{shape} over {executor} ended {result.status}: {result.error}")
                    wall = statistics.median(times)
                    print(
                        f"{shape:<8} {args.nodes:>6} {executor:<8} {wall:>8.2f} {1000 * wall / args.nodes:>8.1f}",
                        flush=True,
                    )
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
