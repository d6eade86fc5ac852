"""Install the peers into their own venv and run one peer benchmark there, under a hard timeout.

Each repeat is a separate subprocess with a fresh temp directory (and so a fresh
database, server or cluster); the result is the median over the repeats.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_VENV = REPO / "benchmarks" / ".peers-venv"
REQUIREMENTS = HERE / "requirements.txt"

# peer name -> (module in this package, extra arguments)
_COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "prefect": ("prefect_bench", ("--variant", "threads")),
    "prefect-processes": ("prefect_bench", ("--variant", "processes")),
    "dagster": ("dagster_bench", ()),
    "dask-threads": ("dask_bench", ("--variant", "threads")),
    "dask-cluster": ("dask_bench", ("--variant", "cluster")),
    "luigi": ("luigi_bench", ()),
}
PEERS: tuple[str, ...] = tuple(_COMMANDS)
SHAPES: tuple[str, ...] = ("fan-out", "chain")
# Prefect and Dagster take minutes at 10,000 nodes (issue 7): compare them at 1,000.
# Prefect's process pool costs ~0.1 s a task here (about 2 min for 1,000): compare it at 100.
# Luigi's scheduler is superlinear (8-13 ms/node at 1,000, > 2 min for a 10,000 fan-out here).
MAX_N: dict[str, int] = {"prefect": 1_000, "prefect-processes": 100, "dagster": 1_000, "luigi": 1_000}
DEFAULT_MAX_N = 10_000
INSTALL_TIMEOUT_S = 1_200
KILL_GRACE_S = 5


class PeerError(RuntimeError):
    """A peer benchmark failed, timed out, or could not be installed."""

    def __init__(self, peer: str, shape: str, n: int, reason: str, timed_out: bool = False):
        super().__init__(f"peer {peer!r}, shape {shape!r}, n={n}: {reason}")
        self.peer, self.shape, self.n, self.reason, self.timed_out = peer, shape, n, reason, timed_out


def max_n(peer: str) -> int:
    """Return the largest node count worth asking of peer."""
    return MAX_N.get(peer, DEFAULT_MAX_N)


def python_of(venv: Path) -> Path:
    """Return the interpreter of venv."""
    return Path(venv).absolute() / "bin" / "python"


def _stamp(venv: Path) -> Path:
    return venv / ".requirements.sha256"


def _requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def available(venv: Path = DEFAULT_VENV) -> bool:
    """Tell whether venv holds the peers at the versions pinned in requirements.txt."""
    venv = Path(venv)
    stamp = _stamp(venv)
    return python_of(venv).exists() and stamp.exists() and stamp.read_text().strip() == _requirements_hash()


def ensure_venv(path: Path = DEFAULT_VENV) -> Path:
    """Create the peers' venv at path and install requirements.txt into it, unless already done.

    Returns path. A first install takes 30 to 60 s and ~350 MB.
    """
    path = Path(path)
    if available(path):
        return path
    steps = []
    if not python_of(path).exists():
        # sys._base_executable: a venv made from inside another venv must not inherit it.
        base = getattr(sys, "_base_executable", sys.executable)
        steps.append([base, "-m", "venv", str(path)])
    steps.append(
        [
            str(python_of(path)),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "-r",
            str(REQUIREMENTS),
        ]
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise PeerError("*", "*", 0, f"install timed out after {INSTALL_TIMEOUT_S} s") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
            raise PeerError("*", "*", 0, f"`{' '.join(step)}` failed:\n" + "\n".join(tail))
    _stamp(path).write_text(_requirements_hash() + "\n")
    return path


def _kill_group(proc: subprocess.Popen[str]) -> None:
    # The bench runs in its own session: this reaches Prefect's server, Dask's workers
    # and Luigi's forks as well, whether the bench is still alive or has exited.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGTERM:
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.2)


def _run_once(venv: Path, peer: str, shape: str, n: int, timeout_s: float) -> dict[str, Any]:
    module, extra = _COMMANDS[peer]
    command = [
        str(python_of(venv)),
        "-m",
        f"benchmarks.peers.{module}",
        "--shape",
        shape,
        "--n",
        str(n),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PYTHONUNBUFFERED"] = "1"
    with (
        tempfile.TemporaryDirectory(prefix=f"peer-{peer}-") as cwd,
        open(Path(cwd) / "stderr.log", "w+") as stderr,
    ):
        # A bare benchmarks/ namespace holding only this package, so that neither the bench
        # nor the processes Dask spawns (which re-import it) run benchmarks/__init__.py:
        # it may import flowlib, which the peers' venv lacks.
        (Path(cwd) / "benchmarks").mkdir()
        (Path(cwd) / "benchmarks" / "peers").symlink_to(HERE, target_is_directory=True)
        # Temp files of the bench and its libraries go here too, so that a killed run leaves none.
        env["TMPDIR"] = cwd
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise PeerError(peer, shape, n, f"timed out after {timeout_s:g} s", timed_out=True) from exc
        finally:
            _kill_group(proc)
        stderr.seek(0)
        err_tail = "\n".join(stderr.read().strip().splitlines()[-15:])
    lines = [line for line in stdout.splitlines() if line.startswith('{"peer"')]
    if proc.returncode != 0 or not lines:
        raise PeerError(peer, shape, n, f"exit status {proc.returncode}:\n{err_tail}")
    return json.loads(lines[-1])


def measure(
    peer: str,
    shape: str,
    n: int,
    repeat: int = 3,
    *,
    venv: Path = DEFAULT_VENV,
    timeout_s: float = 300,
) -> dict[str, Any]:
    """Run peer's shape at n nodes repeat times, each in a fresh subprocess, and return the medians.

    The result has peer, shape, n, wall_s, per_node_ms and peak_rss_mb (the largest over
    the repeats), the peer's version and its other fields (setup_s: server or cluster start,
    outside wall_s), and runs: every repeat's wall_s. Raises PeerError on a failure or a
    repeat running past timeout_s; the remaining repeats are then not run.
    """
    if peer not in _COMMANDS:
        raise PeerError(peer, shape, n, f"unknown peer; known: {', '.join(PEERS)}")
    if shape not in SHAPES:
        raise PeerError(peer, shape, n, f"unknown shape; known: {', '.join(SHAPES)}")
    if not available(Path(venv)):
        raise PeerError(peer, shape, n, f"no peers venv at {venv}: call ensure_venv() first")
    runs = [_run_once(Path(venv), peer, shape, n, timeout_s) for _ in range(repeat)]
    result: dict[str, Any] = dict(runs[0])
    for key, value in runs[0].items():
        values = [run.get(key) for run in runs]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and None not in values:
            result[key] = statistics.median(values)
    result["n"] = n
    result["per_node_ms"] = round(result["wall_s"] * 1000 / n, 4)
    result["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    result["runs"] = [run["wall_s"] for run in runs]
    return result


def venv_size_mb(venv: Path = DEFAULT_VENV) -> float:
    """Return the disk size of venv in MB."""
    total = sum(p.stat().st_size for p in Path(venv).rglob("*") if p.is_file() and not p.is_symlink())
    return round(total / 2**20, 1)
