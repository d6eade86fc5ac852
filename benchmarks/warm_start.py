"""Warm workers on a spaceflights-like pipeline: `local` with workers forked from a warm template
(start = "fork", the default) or started as fresh interpreters (start = "spawn", how every worker
started before), against `inline`. Run by hand; needs pandas and scikit-learn:

    .venv/bin/pip install pandas scikit-learn
    .venv/bin/python benchmarks/warm_start.py [--repeat 5] [--workers 2,4]

Twelve short nodes, Kedro's spaceflights in miniature (synthetic data, no downloads), whose
module imports pandas and scikit-learn. Each repetition runs every configuration once, in
turn, so the machine's drift hits all alike; the table gives the median (and least) wall seconds
of `flow run --no-cache` (a fresh process each time, as a user runs it), the median's ratio to
inline, and the median CPU seconds of the run and every process it started (what a busy machine
pays, whatever else runs on it).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = """
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from flowlib import operator, workflow


class Split(NamedTuple):
    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


FEATURES = ["engines", "passenger_capacity", "crew", "d_check_complete", "moon_clearance_complete",
            "iata_approved", "company_rating", "review_scores_rating"]


@operator
def companies(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"id": np.arange(n), "company_rating": [f"{r}%" for r in rng.integers(50, 100, n)],
                         "iata_approved": rng.choice(["t", "f"], n)})


@operator
def shuttles(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame({"id": np.arange(n), "company_id": rng.integers(0, n, n),
                         "engines": rng.integers(1, 4, n), "passenger_capacity": rng.integers(2, 10, n),
                         "crew": rng.integers(1, 5, n), "d_check_complete": rng.choice(["t", "f"], n),
                         "moon_clearance_complete": rng.choice(["t", "f"], n),
                         "price": [f"${p:,.2f}" for p in rng.uniform(1e3, 1e4, n)]})


@operator
def reviews(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"shuttle_id": np.arange(n), "review_scores_rating": rng.uniform(50, 100, n)})


def _flag(column: pd.Series) -> pd.Series:
    return column == "t"


@operator
def preprocess_companies(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["iata_approved"] = _flag(out["iata_approved"])
    out["company_rating"] = out["company_rating"].str.rstrip("%").astype(float) / 100
    return out


@operator
def preprocess_shuttles(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for column in ("d_check_complete", "moon_clearance_complete"):
        out[column] = _flag(out[column])
    out["price"] = out["price"].str.replace("[$,]", "", regex=True).astype(float)
    return out


@operator
def model_input(shuttles: pd.DataFrame, companies: pd.DataFrame, reviews: pd.DataFrame) -> pd.DataFrame:
    table = shuttles.merge(reviews, left_on="id", right_on="shuttle_id")
    table = table.merge(companies.drop(columns="id"), left_on="company_id", right_index=True)
    return table.dropna()


@operator
def split_data(table: pd.DataFrame, test_size: float = 0.2) -> Split:
    x_train, x_test, y_train, y_test = train_test_split(
        table[FEATURES], table["price"], test_size=test_size, random_state=3)
    return Split(x_train, x_test, y_train, y_test)


@operator
def train_linear(x: pd.DataFrame, y: pd.Series) -> LinearRegression:
    return LinearRegression().fit(x, y)


@operator
def train_forest(x: pd.DataFrame, y: pd.Series) -> RandomForestRegressor:
    return RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0).fit(x, y)


@operator
def evaluate(model: object, x: pd.DataFrame, y: pd.Series) -> float:
    return float(r2_score(y, model.predict(x)))


@operator
def report(scores: dict) -> str:
    return ", ".join(f"{name} r2={score:.3f}" for name, score in sorted(scores.items()))


@workflow
def spaceflights(n: int = 2000) -> str:
    table = model_input(preprocess_shuttles(shuttles(n)), preprocess_companies(companies(n)), reviews(n))
    s = split_data(table)
    linear, forest = train_linear(s.x_train, s.y_train), train_forest(s.x_train, s.y_train)
    return report({"linear": evaluate(linear, s.x_test, s.y_test),
                   "forest": evaluate(forest, s.x_test, s.y_test)})
"""


def configs(workers: list[int]) -> dict[str, tuple[str, str, int]]:
    """name -> (executor, the [executors.local] start line, workers)."""
    found = {"inline": ("inline", "", 1)}
    for n in workers:
        found[f"local, {n} workers, spawn (before)"] = ("local", 'start = "spawn"', n)
        found[f"local, {n} workers, fork (after)"] = ("local", 'start = "fork"', n)
    return found


def flow_once(folder: Path, executor: str, start: str, workers: int) -> tuple[float, float]:
    """One `flow run`: its wall seconds, and the CPU seconds of it and every process it started."""
    (folder / "flow.toml").write_text(
        f'[flow]\nexecutor = "{executor}"\nfsync = false\n\n[executors.local]\nworkers = {workers}\n{start}\n'
    )
    shutil.rmtree(folder / ".flow", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    flow = str(Path(sys.executable).with_name("flow"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        [flow, "run", "pipeline.py", "--no-cache", "--json"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"flow run failed ({executor} {start}):\n{done.stderr}")
    return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", default="2", help="comma-separated worker counts of `local`")
    args = parser.parse_args()
    for needed in ("pandas", "sklearn"):
        try:
            __import__(needed)
        except ImportError:
            raise SystemExit(f"{needed} is missing: pip install pandas scikit-learn") from None
    cases = configs([int(n) for n in args.workers.split(",")])
    with tempfile.TemporaryDirectory(prefix="flowlib-warm-") as tmp:
        folder = Path(tmp)
        (folder / "pipeline.py").write_text(PIPELINE)
        flow_once(folder, "inline", "", 1)  # warms the OS file cache and writes .pyc files
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, (executor, start, workers) in cases.items():
                times[name].append(flow_once(folder, executor, start, workers))
    inline = statistics.median(wall for wall, _ in times["inline"])
    print(
        f"spaceflights-like pipeline, 12 nodes, {os.cpu_count()} CPUs; `flow run --no-cache` over "
        f"{args.repeat} interleaved runs: wall seconds (median, min) and CPU seconds of all its processes"
    )
    print(f"{'configuration':<32} {'median s':>9} {'min s':>7} {'/ inline':>9} {'CPU s':>7}")
    for name, values in times.items():
        walls = [wall for wall, _ in values]
        median = statistics.median(walls)
        cpu = statistics.median(cpu for _, cpu in values)
        print(f"{name:<32} {median:>9.2f} {min(walls):>7.2f} {median / inline:>9.2f} {cpu:>7.2f}")


if __name__ == "__main__":
    main()
