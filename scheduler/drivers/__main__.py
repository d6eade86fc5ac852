"""`python -m scheduler.drivers PLAN.json`: execute a compiled plan here, importing no user code.

The plan (flowlib.plan, as `Plan.dumps()` writes it) was compiled elsewhere; this process
records and drives the run, and only its workers import the pipeline. Prints the run's id
and status as JSON; exits 0 when it succeeded, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from flowlib.config import load
    from flowlib.plan import Plan
    from scheduler.runs import RunOptions, connect, execute_here
    from scheduler.store import repository as repo

    if len(argv) != 1:
        print("usage: python -m scheduler.drivers PLAN.json", file=sys.stderr)
        return 2
    plan = Plan.loads(Path(argv[0]).read_text())
    config = load()
    run_id, _ = execute_here(plan, config, RunOptions())
    with connect(config).connect() as conn:
        status = repo.require_run(conn, run_id).status
    print(json.dumps({"run_id": run_id, "status": status}))
    return 0 if status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
