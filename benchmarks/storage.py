"""What a big list output costs, and what reading commands cost (run by hand; prints a table).

    .venv/bin/python -m benchmarks.storage [--other OTHER_PYTHON] [--repeat 3]

1. A pipeline returning `list(range(100000))` read whole by the next step: the first run's
   wall time, the `.flow` folder's size after it, and how much a fully cached rerun adds to
   the database (flow.db and its WAL).
2. A torch pipeline: `flow runs --json` and `flow outputs RUN` wall time (reading commands
   should not import the pipeline, and so not torch).

With --other, each figure is measured for that install too (another checkout's venv), runs
interleaved, so the two columns compare like for like.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIG_LIST = """
from flowlib import operator, workflow

@operator
def numbers(n: int) -> list[int]:
    return list(range(n))

@operator
def total(xs: list[int]) -> int:
    return sum(xs)

@workflow
def big(n: int = 100000) -> int:
    return total(numbers(n))
"""

TORCH = """
import torch
from flowlib import operator, workflow

@operator
def weights(n: int) -> torch.Tensor:
    return torch.arange(float(n))

@operator
def norm(w: torch.Tensor) -> float:
    return float(w.norm())

@workflow
def model(n: int = 1000) -> float:
    return norm(weights(n))
"""


def _flow(python: str, root: Path, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env["FLOW_HOME"] = str(root / ".flow")
    flow = str(Path(python).with_name("flow"))
    started = time.perf_counter()
    subprocess.run([flow, *args], cwd=root, env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def _size(folder: Path, pattern: str = "**/*") -> int:
    return sum(f.stat().st_size for f in folder.glob(pattern) if f.is_file())


def big_list(python: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "flow.toml").write_text("")
        (root / "p.py").write_text(BIG_LIST)
        first = _flow(python, root, "run", "p.py")
        disk = _size(root / ".flow")
        _flow(python, root, "run", "p.py")  # the plan is stored once; a rerun after it adds only its rows
        before = _size(root / ".flow", "flow.db*")
        cached = _flow(python, root, "run", "p.py")
        growth = _size(root / ".flow", "flow.db*") - before
    return {
        "100k list: first run s": first,
        "100k list: .flow MB": disk / 1e6,
        "cached rerun s": cached,
        "cached rerun adds KB": growth / 1e3,
    }


def reading(python: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "flow.toml").write_text("")
        (root / "p.py").write_text(TORCH)
        _flow(python, root, "run", "p.py")
        runs = _flow(python, root, "runs", "--json")
        outputs = _flow(python, root, "outputs", _latest(python, root))
    return {"torch: flow runs --json s": runs, "torch: flow outputs s": outputs}


def _latest(python: str, root: Path) -> str:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env["FLOW_HOME"] = str(root / ".flow")
    flow = str(Path(python).with_name("flow"))
    done = subprocess.run(
        [flow, "runs", "--json"], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)[0]["run_id"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--other", default=None, help="another install's interpreter, measured beside this one"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pythons = [sys.executable, *([args.other] if args.other else [])]
    results: dict[str, dict[str, list[float]]] = {p: {} for p in pythons}
    for _ in range(args.repeat):
        for python in pythons:
            for measure in (big_list, reading):
                for key, value in measure(python).items():
                    results[python].setdefault(key, []).append(value)
    print(f"medians of {args.repeat}; this install first" + (", then --other" if args.other else ""))
    for key in results[sys.executable]:
        cells = [f"{statistics.median(results[p][key]):10.2f}" for p in pythons]
        print(f"{key:<28} {' '.join(cells)}")


if __name__ == "__main__":
    main()
