"""Helpers for end-to-end tests: a project folder with its own FLOW_HOME, and `flow` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

FLOW = str(Path(sys.executable).with_name("flow"))
TRACEBACK = r'Traceback \(most recent call last\)|^\s*File ".*", line \d+'


# A quick operator with a 1 s timeout in a pipeline whose import takes 3 s: every worker pays
# that as it starts, before the operator; the timeout must not count it.
SLOW_START = """
import time
from flowlib import operator, workflow

time.sleep(3)

@operator(timeout=1)
def quick(i: int) -> int:
    return i

@workflow
def w(n: int = 2) -> list[int]:
    return quick.map(list(range(n)))
"""


def alive(pid: int) -> bool:
    """Whether process `pid` runs: a zombie does not, nor one reaped while we looked."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"


@dataclass
class Project:
    root: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_") or k == "FLOW_TEST_PG_URL"}
        env["FLOW_HOME"] = str(self.root / ".flow")
        return env

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def flow(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Done:
        done = subprocess.run(
            [FLOW, *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Done(done.returncode, done.stdout, done.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [FLOW, *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def marks(self, name: str) -> list[str]:
        """Lines operators appended to marks/NAME (one per real execution)."""
        path = self.root / "marks" / name
        return path.read_text().splitlines() if path.exists() else []


def make_project(root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    (root / "flow.toml").write_text("# every key is optional\n")
    (root / "marks").mkdir(exist_ok=True)
    return Project(root)


# Operators append a line to marks/<name> each time they really execute.
MARK = """
import os, pathlib
def mark(name, text="ran"):
    folder = pathlib.Path(os.environ.get("MARKS", "marks"))
    folder.mkdir(exist_ok=True)
    with open(folder / name, "a") as f:
        f.write(f"{text} {os.getpid()}\\n")
"""
