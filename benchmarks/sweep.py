"""`flow sweep` against a plain Optuna loop (run by hand; prints a table): a 20-trial digits sweep.

    .venv/bin/python -m benchmarks.sweep [--trials 20] [--epochs 15] [--repeat 1] [--seed 0]

Both tune examples/sweep/pipeline.py's MLP over lr=loguniform(1e-4,1e-1) and hidden=int(16,256),
maximizing the validation accuracy, with Optuna's TPE sampler (same seed) and median pruner; the
training is the same code (the example's helpers). Every row is a fresh process (a fresh
FLOW_HOME for flowlib, an in-memory study for the plain loop), timed from start to exit.

- plain loop, data per trial: `study.optimize(objective)` whose objective prepares the data and
  trains, as Optuna's own examples are written.
- plain loop, data once: the same with the data prepared once before the loop (by hand).
- plain loop, SQLite study: data per trial, with the study in Optuna's SQLite storage (a file, as
  `flow sweep` keeps it so that a killed sweep resumes) rather than in memory.
- flow sweep --parallel 1 / 2: the data step runs once through the cache, trials are runs.
Each row runs with --pruner median and with --pruner none (what pruning saves). A pruned trial's
operator is stopped by an exception raised in it (its worker lives on, warm), or killed after 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "sweep" / "pipeline.py"
FLOW = str(Path(sys.executable).with_name("flow"))

PLAIN = """
import json, sys, time
import optuna, torch
sys.path.insert(0, {folder!r})
import pipeline as p

optuna.logging.set_verbosity(optuna.logging.WARNING)
torch.set_num_threads({threads})
trials, epochs, seed, once, storage = {trials}, {epochs}, {seed}, {once}, {storage!r}
shared = p.prepare(seed, 0.2) if once else None  # an operator called outside a build is a plain call

def objective(trial):
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    hidden = trial.suggest_int("hidden", 16, 256)
    data = shared if once else p.prepare(seed, 0.2)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = p.make_model(hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    score = 0.0
    for epoch in range(epochs):
        p.train_epoch(model, optimizer, data.x_train, data.y_train, generator)
        score = p.accuracy(model, data.x_val, data.y_val)
        trial.report(score, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return score

pruner = optuna.pruners.MedianPruner() if {pruner!r} == "median" else optuna.pruners.NopPruner()
study = optuna.create_study(
    direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner, storage=storage
)
study.optimize(objective, n_trials=trials)
states = [t.state.name.lower() for t in study.trials]
print(json.dumps({{"best": study.best_value, "complete": states.count("complete"), "pruned": states.count("pruned")}}))
"""


def _children_cpu() -> float:
    """CPU seconds of the finished child processes and theirs (flow's workers included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def plain(
    folder: Path,
    trials: int,
    epochs: int,
    seed: int,
    once: bool,
    threads: int,
    pruner: str,
    sqlite: bool = False,
) -> dict:
    study = folder / "plain-study.db"  # a fresh study each time, in the benchmark's own folder
    study.unlink(missing_ok=True)
    storage = f"sqlite:///{study}" if sqlite else None
    code = PLAIN.format(
        folder=str(folder),
        trials=trials,
        epochs=epochs,
        seed=seed,
        once=once,
        threads=threads,
        pruner=pruner,
        storage=storage,
    )
    started, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=folder)
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"the plain loop failed:\n{done.stderr[-3000:]}")
    return {"wall": wall, "cpu": cpu, **json.loads(done.stdout.strip().splitlines()[-1])}


def flow_sweep(folder: Path, trials: int, epochs: int, seed: int, parallel: int, pruner: str) -> dict:
    home = Path(tempfile.mkdtemp(prefix="flow-sweep-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env["FLOW_HOME"] = str(home)
    argv = [
        FLOW,
        "sweep",
        "pipeline.py",
        "--space",
        "lr=loguniform(1e-4,1e-1)",
        "--space",
        "hidden=int(16,256)",
    ]
    argv += ["--objective", "val_accuracy", "--direction", "maximize", "--trials", str(trials)]
    argv += ["--parallel", str(parallel), "--pruner", pruner, "--seed", str(seed), "-p", f"epochs={epochs}"]
    started, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, cwd=folder, env=env)
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"flow sweep failed:\n{done.stderr[-3000:]}")
    status = json.loads(done.stdout)
    states = [t["state"] for t in status["trials"]]
    conn = sqlite3.connect(home / "flow.db")
    try:
        data_s = conn.execute(
            "SELECT duration_s FROM nodes WHERE name = 'prepare' AND NOT cached"
        ).fetchone()[0]
        computed = conn.execute(
            "SELECT count(*) FROM nodes WHERE name = 'prepare' AND NOT cached"
        ).fetchone()[0]
    finally:
        conn.close()
    return {
        "wall": wall,
        "cpu": cpu,
        "best": status["best"]["value"],
        "complete": states.count("complete"),
        "pruned": states.count("pruned"),
        "data_s": data_s,
        "data_runs": computed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="rows interleaved, medians reported")
    parser.add_argument("--only", default="", help="run only the rows whose name holds this text")
    parser.add_argument(
        "--plain-threads",
        type=int,
        default=1,
        help="torch threads of the plain loop (a flowlib worker gives a node as many as its cpus=, 1)",
    )
    args = parser.parse_args()
    threads, common = args.plain_threads, (args.trials, args.epochs, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "flow.toml").write_text("")
        (folder / "pipeline.py").write_text(EXAMPLE.read_text())
        rows = {}
        for pruner in ("median", "none"):
            flag = f"--pruner {pruner}"
            rows |= {
                f"plain Optuna loop, data per trial, {flag}": partial(
                    plain, folder, *common, False, threads, pruner
                ),
                f"plain Optuna loop, data once, {flag}": partial(
                    plain, folder, *common, True, threads, pruner
                ),
                f"plain Optuna loop, SQLite study, {flag}": partial(
                    plain, folder, *common, False, threads, pruner, sqlite=True
                ),
                f"flow sweep --parallel 1 {flag}": partial(flow_sweep, folder, *common, 1, pruner),
                f"flow sweep --parallel 2 {flag}": partial(flow_sweep, folder, *common, 2, pruner),
            }
        rows_all = dict(rows)
        rows = {name: measure for name, measure in rows.items() if args.only in name}
        results: dict[str, list[dict]] = {name: [] for name in rows}
        for _ in range(args.repeat):  # interleaved, so a noisy neighbour hits every row alike
            for name, measure in rows.items():
                results[name].append(measure())
                print(f"  {name}: {results[name][-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    wall = {name: statistics.median(r["wall"] for r in found) for name, found in results.items()}
    print(
        f"\n{args.trials}-trial digits sweep, {args.epochs} epochs, TPE seed {args.seed}; {os.cpu_count()} CPUs; "
        f"plain loop with {threads} torch thread(s); median of {args.repeat}\n"
    )
    print(
        "| configuration | wall s | vs plain loop, data per trial | CPU s | complete / pruned | best val accuracy |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, found in results.items():
        base = wall.get(f"plain Optuna loop, data per trial, --pruner {name.rsplit(' ', 1)[-1]}")
        versus = f"{wall[name] / base:.2f}x" if base else "-"
        cpu = statistics.median(r["cpu"] for r in found)
        last = found[-1]
        print(
            f"| {name} | {wall[name]:.1f} | {versus} | {cpu:.1f} | {last['complete']} / {last['pruned']} "
            f"| {last['best']:.4f} |"
        )
    if len(results) == len(rows_all):
        print(summary(results, wall, args.trials))


def summary(results: dict[str, list[dict]], wall: dict[str, float], trials: int) -> str:
    """What the shared data step and pruning save."""
    p1_row = "flow sweep --parallel 1 --pruner median"
    p1 = results[p1_row]
    data_s = statistics.median(r["data_s"] for r in p1)
    again = data_s * (trials - 1)

    def share(row: str, of: str) -> str:
        return f"{1 - wall[row] / wall[of]:.0%}"

    plain = "plain Optuna loop, data per trial, --pruner"
    return textwrap.dedent(
        f"""
        shared data step: flow sweep computed it {p1[-1]["data_runs"]}x per sweep ({data_s:.2f} s in its worker, importing
          scikit-learn included); at that cost in every trial it would add {again:.1f} s, {again / (wall[p1_row] + again):.0%} of that sweep.
          The plain loop saves {share("plain Optuna loop, data once, --pruner median", f"{plain} median")} (median pruner) and {share("plain Optuna loop, data once, --pruner none", f"{plain} none")} (none) by preparing the data once by hand.
        pruning (--pruner median against none): flow sweep --parallel 1 saves {share(p1_row, "flow sweep --parallel 1 --pruner none")},
          --parallel 2 {share("flow sweep --parallel 2 --pruner median", "flow sweep --parallel 2 --pruner none")}, the plain loop {share(f"{plain} median", f"{plain} none")}
        """
    ).strip()


if __name__ == "__main__":
    main()
