"""What the chaos trials start and break: a PostgreSQL server, a tmpfs, `flow server` processes.

Everything here is real: PostgreSQL is a throwaway cluster of our own (initdb + pg_ctl, run as
the `postgres` user when we are root), the tmpfs is mounted with mount(8), and servers are
`flow server` processes. Each `why_not_*` says why a kind of fault cannot run here (or None).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

FLOW = str(Path(sys.executable).with_name("flow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- PostgreSQL ------------------------------------------------------------------------------
def _pg_bindir() -> Path | None:
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(found[0]).parent if found else None


def why_not_postgres() -> str | None:
    """Why a throwaway PostgreSQL cannot be started here, or None."""
    if _pg_bindir() is None:
        return "no PostgreSQL installed (initdb and pg_ctl)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a `postgres` user (initdb refuses root)"
        if shutil.which("runuser") is None:
            return "running as root without runuser"
    return None


class Postgres:
    """A PostgreSQL cluster of our own on 127.0.0.1 that can be stopped (as a crash) and started."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        assert self.bindir is not None, why_not_postgres()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.top = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.top.chmod(0o755)
        self.data = self.top / "data"
        self.data.mkdir(mode=0o700)
        if self.as_user:
            shutil.chown(self.data, user="postgres", group="postgres")
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._ctl("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()

    def _ctl(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / program), *args], check=True, capture_output=True, timeout=60
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data / "server.log")
        self._ctl("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """Stop at once, as a crash would: connections are cut, nothing is flushed politely."""
        self._ctl("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.top, ignore_errors=True)

    def create_database(self) -> str:
        name = f"chaos_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(statement)
        finally:
            engine.dispose()


# -- a small disk ----------------------------------------------------------------------------
def why_not_tmpfs() -> str | None:
    """Why a tmpfs cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount(8)"
    return None


class Tmpfs:
    """A tmpfs of `size` bytes mounted at `path` (created); `grow` remounts it bigger."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))

    @staticmethod
    def _mount(*args: str) -> None:
        done = subprocess.run(["mount", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"mount {' '.join(args)}: {done.stderr.strip()}")

    def grow(self, size: int) -> None:
        self._mount("-o", f"remount,size={size}", str(self.path))

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)


# -- flow server -----------------------------------------------------------------------------
@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def kill(self) -> None:
        """SIGKILL the server process alone: its workers must notice and stop by themselves."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """Kill the server and whatever it started (cleanup after a trial)."""
        started = descendants(self.process.pid)
        self.kill()
        kill_all(started)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_servers(root: Path, env: dict[str, str], names: list[str]) -> list[Server]:
    """`flow server --no-auth` processes on free ports in `root`, started together, each answering
    its health check; their output goes to NAME.log."""
    servers = []
    for name in names:
        port = free_port()
        log = root / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [FLOW, "server", "--no-auth", "--port", str(port)],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        servers.append(Server(process, f"http://127.0.0.1:{port}", log))
    try:
        for server in servers:
            _wait_ready(server)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"flow server exited with {server.process.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(server.url + "/api/health", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"flow server did not answer within 60 s:\n{server.output()}")


def descendants(pid: int) -> list[psutil.Process]:
    """Every process `pid` started, however deep (workers lead process groups of their own)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def outliving(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `processes` still alive after waiting up to `timeout` seconds for them to end."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in processes if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def started_with(variable: str, value: str) -> list[psutil.Process]:
    """Every live process whose environment has `variable=value` (what a trial started)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(variable) == value and _alive(process):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
