"""Shared fixtures: a project folder (flow.toml, its own FLOW_HOME) holding pipeline files,
imported by path like `flow` does, and `flow` itself run as a subprocess."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

FLOW = str(Path(sys.executable).with_name("flow"))
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|^\s*File ".*", line \d+', re.MULTILINE)

_modules = itertools.count()
_SESSION_TMPDIR = tempfile.gettempdir()


@dataclass
class Done:
    """What a `flow` command did: its exit code, stdout and stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"


class Project:
    """A user's project folder: write pipeline files, import them, run `flow` in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loaded: list[str] = []

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
        env["FLOW_HOME"] = str(self.root / ".flow")
        return env

    def write(self, name: str, source: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"))
        return path

    def line(self, name: str, marker: str) -> int:
        """Return the number of the first line of file `name` that contains `marker`."""
        for number, text in enumerate((self.root / name).read_text().splitlines(), start=1):
            if marker in text:
                return number
        raise AssertionError(f"{marker!r} is not in {name}")

    def load(self, name: str) -> ModuleType:
        """Import the pipeline file `name` by path under a fresh module name, as a test would."""
        path = self.root / name
        module_name = f"flowtest_{path.stem}_{next(_modules)}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and typing resolve names through it
        self.loaded.append(module_name)
        spec.loader.exec_module(module)
        return module

    def flow(self, *args: str, timeout: float = 120) -> Done:
        done = subprocess.run(
            [FLOW, *args],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Done(done.returncode, done.stdout, done.stderr)

    def python(self, code: str, timeout: float = 120) -> Done:
        """Run `code` in a fresh interpreter of this venv, in the project folder."""
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Done(done.returncode, done.stdout, done.stderr)

    def fails(self, *args: str, expect: tuple[str, ...] | list[str] = ()) -> str:
        """Run `flow ARGS`, check it is a clean usage error (exit 2, one line, no traceback); return stderr."""
        done = self.flow(*args)
        assert done.code == 2, str(done)
        assert not TRACEBACK.search(done.err), str(done)
        lines = [line for line in done.err.splitlines() if line.strip()]
        assert len(lines) == 1, str(done)
        for fragment in expect:
            assert fragment in done.err, f"{fragment!r} missing\n{done}"
        return done.err


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty project (a flow.toml) as the working folder, with FLOW_HOME inside it."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "flow.toml").write_text("")
    monkeypatch.chdir(root)
    monkeypatch.setenv("FLOW_HOME", str(root / ".flow"))
    made = Project(root)
    path_before = list(sys.path)
    yield made
    # flowlib.loading imports pipelines under their stem and puts their folder on sys.path: undo both
    for name, module in list(sys.modules.items()):
        if name in made.loaded or str(getattr(module, "__file__", None) or "").startswith(str(root)):
            del sys.modules[name]
    sys.path[:] = path_before


# -- servers shared by the whole session (each is started on first use) ---------------------------
@pytest.fixture(scope="session")
def sshd_host(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real OpenSSH daemon on 127.0.0.1 (tests/sshd.py) that the `ssh` executor's tests share."""
    import sshd

    pytest.importorskip("asyncssh", reason="asyncssh is not installed (pip install 'flowlib[ssh]')")
    why = sshd.missing()
    if why:
        pytest.skip(why)
    daemon = sshd.start(tmp_path_factory.mktemp("sshd"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def ray_head() -> Any:
    """One local Ray cluster (a head node, num_cpus=2) for the session; executors find Ray
    initialised and use it. Its head declares one GPU, which this machine need not have: Ray only
    accounts for it. Tests may add nodes; they remove them again."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")
    import logging

    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with pytest.MonkeyPatch.context() as patch:
        # the session's own temp folder, not a test's (Ray's socket paths must stay short)
        patch.setenv("TMPDIR", _SESSION_TMPDIR)
        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1, "include_dashboard": False}
        )
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
