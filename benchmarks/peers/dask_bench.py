"""Dask: the no-op fan-out and chain with dask.delayed, on the threaded scheduler or a LocalCluster.

threads: dask.compute(..., scheduler="threads") (a pool of one thread per core).
cluster: distributed.LocalCluster with 2 worker processes of 1 thread each and a
Client; starting them is setup_s, outside wall_s. Neither persists anything.
wall_s covers building the delayed graph and computing it.
"""

from __future__ import annotations

import os
import tempfile

from .common import parse_args, report, timed


def noop(i: int) -> int:
    return i


def gather(values: list[int]) -> int:
    return sum(values)


def step(value: int) -> int:
    return value + 1


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], variants=("threads", "cluster"))
    with tempfile.TemporaryDirectory(prefix="peer-dask-") as scratch:
        os.environ["DASK_TEMPORARY_DIRECTORY"] = scratch
        import dask
        from dask import delayed

        def run() -> int:
            if args.shape == "fan-out":
                graph = delayed(gather)([delayed(noop)(i) for i in range(args.n)])
            else:
                graph = 0
                for _ in range(args.n):
                    graph = delayed(step)(graph)
            (result,) = dask.compute(graph, scheduler=scheduler)
            return result

        setup_s = 0.0
        if args.variant == "threads":
            scheduler = "threads"
            result, wall_s = timed(run)
        else:
            from distributed import Client, LocalCluster

            def start() -> tuple[LocalCluster, Client]:
                cluster = LocalCluster(
                    n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
                )
                return cluster, Client(cluster)

            (cluster, client), setup_s = timed(start)
            scheduler = client
            try:
                result, wall_s = timed(run)
            finally:
                client.close()
                cluster.close()
        report(
            f"dask-{args.variant}",
            args.shape,
            args.n,
            result,
            wall_s,
            dask.__version__,
            setup_s=setup_s,
        )


if __name__ == "__main__":
    main()
