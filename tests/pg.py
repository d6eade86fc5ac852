"""A PostgreSQL server for tests: FLOW_TEST_PG_URL, else a throwaway local one, else None."""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

_started: str | None = None
_failure: str | None = None


def server_url() -> str | None:
    """Return a URL of a PostgreSQL server, starting a local one on first call if needed."""
    global _started, _failure
    if os.environ.get("FLOW_TEST_PG_URL"):
        return os.environ["FLOW_TEST_PG_URL"]
    if _started is None and _failure is None:
        try:
            _started = _start_local()
        except (OSError, subprocess.SubprocessError) as exc:
            _failure = str(exc)
    return _started


def why_unavailable() -> str:
    """Say why server_url() returned None."""
    if _failure:
        return f"starting a local PostgreSQL failed: {_failure}"
    return "no PostgreSQL: set FLOW_TEST_PG_URL or install postgresql (initdb and pg_ctl)"


@contextlib.contextmanager
def database() -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards; the test is skipped without a server."""
    server = server_url()
    if server is None:
        pytest.skip(why_unavailable())
    url = create_database(server)
    try:
        yield url
    finally:
        drop_database(url)


def create_database(url: str) -> str:
    """Create a fresh database `flow_test_<random>` on the server at `url`; return its URL."""
    name = f"flow_test_{uuid.uuid4().hex[:12]}"
    _admin(url, f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the database named in `url`, closing whatever connections it still has."""
    name = make_url(url).database
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(url: str, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run in a transaction, nor while connected to that database.
    admin_url = make_url(url).set(database="postgres")
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _bindir() -> Path | None:
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalPostgres:
    """A throwaway PostgreSQL server of this test session's own (it can be stopped and started)."""

    def __init__(self, bindir: Path, as_user: list[str]) -> None:
        self.bindir, self.as_user = bindir, as_user
        self.top = Path(tempfile.mkdtemp(prefix="flow-pg-"))
        self.top.chmod(0o755)
        self.data = self.top / "data"
        self.data.mkdir(mode=0o700)
        if as_user:
            shutil.chown(self.data, user="postgres", group="postgres")
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._run(
            str(bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()
        atexit.register(self.remove)

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.data / "server.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop at once, as a crash would (connections are cut, nothing is flushed politely)."""
        subprocess.run(
            [
                *self.as_user,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.top, ignore_errors=True)


def own_server() -> LocalPostgres | None:
    """A new local server that a test may stop and start (None where PostgreSQL is not installed)."""
    bindir = _bindir()
    if bindir is None:
        return None
    as_user: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root.
        if shutil.which("runuser") is None:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None
        as_user = ["runuser", "-u", "postgres", "--"]
    return LocalPostgres(bindir, as_user)


def _start_local() -> str | None:
    server = own_server()
    return server.url if server is not None else None
