"""Chaos: random DAGs, one fault per trial at a random moment, recovery, and what survived.

    .venv/bin/python benchmarks/chaos.py [--seed 1] [--trials 60] [--kinds kill-run,corrupt,...]
                                         [--min-nodes 10] [--max-nodes 60] [--keep] [-v]

Faults (one per trial, kinds taken in turn; each round of kinds shares one random DAG):

- kill-run     SIGKILL of `flow run` (its workers must stop by themselves), then `flow resume`;
- kill-worker  SIGKILL of the worker process running a node; retries recover, else resume;
- kill-server  SIGKILL of the `flow server` running the run, one of a two-server pool on
               PostgreSQL (lease 3 s); the other adopts the run;
- pg-restart   PostgreSQL stopped mid-run (immediate mode, as a crash) and started again
               0.5-5 s later; the run rides through;
- disk-full    the artifact store on a tmpfs (mounted here, as root) too small for the run;
               then remounted bigger and resumed;
- corrupt      bytes flipped in a stored artifact (a file, or an inline database row) of a
               succeeded node between runs; then a rerun or a resume must recompute it.

Per trial it checks: the final outputs equal a fault-free run's (`--executor inline` in a clean
home); no node committed as succeeded at the fault executed again (the operators count their
executions); every artifact a succeeded node references is present and whole; the database
passes its integrity checks. Recovery time: from the fault (for disk-full, the failed run's end;
for corrupt, the start of the rerun) to the recovered outputs. Kinds whose prerequisites are
missing (PostgreSQL; root for the tmpfs) are skipped. Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chaoslib.dag import make_dag
from benchmarks.chaoslib.faults import KINDS, Outcome, reference_run, run_trial, why_not
from benchmarks.chaoslib.services import Postgres

COLUMNS = (
    "fault",
    "trials",
    "lost outputs",
    "re-executed succeeded nodes",
    "corrupt artifacts trusted",
    "db integrity errors",
    "other problems",
    "recovery median (s)",
)


def table(outcomes: list[Outcome], kinds: list[str]) -> str:
    """The figures per fault kind and in total, as a Markdown table."""
    rows = []
    for kind in [*kinds, "total"]:
        mine = [o for o in outcomes if kind in ("total", o.kind)]
        if not mine:
            continue
        times = [o.recovery_s for o in mine if o.recovery_s is not None]
        rows.append(
            (
                kind,
                str(len(mine)),
                str(sum(len(o.lost) for o in mine)),
                str(sum(len(o.reexecuted) for o in mine)),
                str(sum(len(o.corrupt) for o in mine)),
                str(sum(len(o.integrity) for o in mine)),
                str(sum(len(o.problems) for o in mine)),
                f"{statistics.median(times):.2f}" if times else "-",
            )
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]

    def line(cells: tuple[str, ...], header: bool = False) -> str:
        shown = [
            c.ljust(w) if header or i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(shown) + " |"

    lines = [line(COLUMNS, header=True), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [line(r) for r in rows]
    return "\n".join(lines)


def describe(o: Outcome, verbose: bool) -> str:
    head = f"{o.kind:<12} seed {o.seed:<8} {o.nodes:>3} nodes  "
    head += f"{'ok' if o.ok else 'FAILED'}  recovery {o.recovery_s or 0:.2f}s"
    details = [f"    lost outputs: {o.lost}"] if o.lost else []
    details += [f"    re-executed: {o.reexecuted}"] if o.reexecuted else []
    details += [f"    bad artifact: {line}" for line in o.corrupt]
    details += [f"    database: {line}" for line in o.integrity]
    details += [f"    problem: {line}" for line in o.problems]
    if verbose or not o.ok:
        details += [f"    note: {line}" for line in o.notes]
    return "\n".join([head, *details])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds")
    parser.add_argument("--min-nodes", type=int, default=10)
    parser.add_argument("--max-nodes", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="keep each trial's folder")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kinds {unknown}; known: {', '.join(KINDS)}")
    for kind in list(kinds):
        reason = why_not(kind)
        if reason:
            print(f"skipping {kind}: {reason}", file=sys.stderr)
            kinds.remove(kind)
    if not kinds:
        return 2
    top = Path(tempfile.mkdtemp(prefix="chaos-"))
    postgres = Postgres() if {"kill-server", "pg-restart"} & set(kinds) else None
    outcomes: list[Outcome] = []
    started = time.monotonic()
    try:
        for number in range(args.trials):
            kind, round_ = kinds[number % len(kinds)], number // len(kinds)
            dag_seed = args.seed * 1_000_003 + round_
            if number % len(kinds) == 0:
                size = random.Random(dag_seed).randint(args.min_nodes, args.max_nodes)
                dag = make_dag(dag_seed, size)
                reference = reference_run(dag, top / f"ref-{round_}")
            outcome = run_trial(kind, dag_seed, dag, reference, top / f"trial-{number}", postgres)
            outcomes.append(outcome)
            print(describe(outcome, args.verbose), file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(top / f"trial-{number}", ignore_errors=True)
    finally:
        if postgres is not None:
            postgres.remove()
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)
    print(f"\n{len(outcomes)} trials, seed {args.seed}, in {time.monotonic() - started:.0f} s")
    print(table(outcomes, kinds))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
