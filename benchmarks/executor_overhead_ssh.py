"""Per-node overhead of the `ssh` executor on loopback (run by hand, prints a table).

    .venv/bin/python benchmarks/executor_overhead_ssh.py [--nodes 50] [--repeat 3] [--slots 2]

Starts its own sshd on 127.0.0.1 (as the tests do: tests/sshd.py), then runs two
no-op DAGs through `flowlib.run(..., executor=E, cache=False)` in one process:
a fan-out (`noop.map`, N nodes) and a chain (N nodes, each waiting for the last).
Each cell is the median wall time of `repeat` runs and that time divided by N;
`local` runs in the same harness for comparison. A chain shows the latency of one
remote attempt (code and inputs shipped, a fresh remote interpreter, outputs
fetched); a fan-out shows throughput with `slots` attempts in flight.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import sshd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.shapes import FAN_AND_CHAIN as PIPELINE


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--executors", default="ssh,local")
    args = parser.parse_args()
    if sshd.missing():
        raise SystemExit(sshd.missing())

    import flowlib
    from flowlib.loading import load_module

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        daemon = sshd.start(root / "sshd")
        try:
            project = root / "project"
            project.mkdir()
            (project / "flow.toml").write_text(
                "[flow]\nfsync = false\n\n[executors.ssh]\n"
                f'hosts = ["{daemon.host}"]\nidentity_file = "{daemon.identity_file}"\n'
                f'known_hosts = "{daemon.known_hosts}"\npython = "{sys.executable}"\n'
                f'workdir = "{root / "remote"}"\nslots = {args.slots}\n\n'
                f"[executors.local]\nworkers = {args.slots}\n"
            )
            (project / "bench_pipeline.py").write_text(PIPELINE)
            os.chdir(project)
            os.environ["FLOW_HOME"] = str(project / ".flow")
            module = load_module(project / "bench_pipeline.py")
            print(f"{'shape':<8} {'nodes':>6} {'executor':<8} {'wall s':>8} {'ms/node':>8}")
            for shape in ("fan", "chain"):
                for executor in args.executors.split(","):
                    times = []
                    for _ in range(args.repeat):
                        started = time.perf_counter()
                        result = flowlib.run(
                            getattr(module, shape), {"n": args.nodes}, executor=executor, cache=False
                        )
                        times.append(time.perf_counter() - started)
                        if result.status != "succeeded":
                            raise SystemExit(f"{shape} over {executor} ended {result.status}")
                    wall = statistics.median(times)
                    print(
                        f"{shape:<8} {args.nodes:>6} {executor:<8} {wall:>8.2f} {1000 * wall / args.nodes:>8.1f}",
                        flush=True,
                    )
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
