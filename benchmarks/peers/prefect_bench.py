"""Prefect 3: the no-op fan-out and chain as @task / @flow, against a private SQLite server.

Variant `threads` (Prefect's default): the fan-out's tasks go to the ThreadPoolTaskRunner and
the chain's run in the flow's thread, like flowlib's `inline`. Variant `processes`: every task
goes to a 2-worker ProcessPoolTaskRunner, like flowlib's `local` pool of worker processes.

Prefect needs an API server; with no PREFECT_API_URL it starts its own "ephemeral"
one in a subprocess on 127.0.0.1, backed here by a fresh SQLite file in a temp
PREFECT_HOME. Starting it (and migrating its database) is setup_s, outside wall_s.
wall_s is the flow call plus draining the client's event and log queues, i.e. until
every task-run record has been handed to the server; persisted_s is until all
task-run rows are in the SQLite file (polled every 50 ms, not part of wall_s).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time

from .common import parse_args, report, timed

POLL_S = 0.05
PERSIST_TIMEOUT_S = 60.0


def _configure(home: str) -> None:
    # Settings are read when prefect is first imported, so this must come before it.
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "PREFECT_HOME": home,
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
        }
    )


def _count_task_runs(db: str) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM task_run").fetchone()[0]
    except sqlite3.OperationalError:
        return -1


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], variants=("threads", "processes"))
    with tempfile.TemporaryDirectory(prefix="peer-prefect-") as home:
        _configure(home)
        import prefect
        from prefect import flow, task
        from prefect.client.orchestration import get_client
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

        processes = args.variant == "processes"
        runner = ProcessPoolTaskRunner(max_workers=2) if processes else ThreadPoolTaskRunner()

        @task
        def noop(i: int) -> int:
            return i

        @task
        def gather(values: list[int]) -> int:
            return sum(values)

        @task
        def step(value: int) -> int:
            return value + 1

        @flow(task_runner=runner)
        def fan_out(n: int) -> int:
            futures = [noop.submit(i) for i in range(n)]
            return gather.submit(futures).result() if processes else gather(futures)

        @flow(task_runner=runner)
        def chain(n: int) -> int:
            value = 0
            for _ in range(n):
                value = step.submit(value).result() if processes else step(value)
            return value

        def start_server() -> None:
            with get_client(sync_client=True) as client:
                error = client.api_healthcheck()
            if error is not None:
                raise error

        def run() -> int:
            result = fan_out(args.n) if args.shape == "fan-out" else chain(args.n)
            EventsWorker.drain_all()
            APILogWorker.drain_all()
            return result

        _, setup_s = timed(start_server)
        started = time.perf_counter()
        result, wall_s = timed(run)
        tasks = args.n + 1 if args.shape == "fan-out" else args.n
        db = os.path.join(home, "prefect.db")
        while _count_task_runs(db) < tasks and time.perf_counter() - started < PERSIST_TIMEOUT_S:
            time.sleep(POLL_S)
        persisted = _count_task_runs(db)
        persisted_s = time.perf_counter() - started
        SubprocessASGIServer().stop()
        report(
            "prefect" if not processes else "prefect-processes",
            args.shape,
            args.n,
            result,
            wall_s,
            prefect.__version__,
            setup_s=setup_s,
            persisted_s=persisted_s if persisted >= tasks else None,
            task_runs_persisted=persisted,
        )


if __name__ == "__main__":
    main()
