"""A real OpenSSH daemon on 127.0.0.1 for the ssh executor's tests: own config, own host key,
a generated client key, public-key authentication only."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    """A running daemon and the files a client needs to reach it."""

    port: int
    process: subprocess.Popen
    identity_file: Path
    known_hosts: Path
    host_key_pub: Path
    folder: Path
    log: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes below the daemon (killing one drops its connection)."""
        import psutil

        try:
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def missing() -> str | None:
    """Why a daemon cannot be started here, or None when it can."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is not installed (apt-get install -y openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (apt-get install -y openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (a dead host)."""
    return free_port()


def keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def known_hosts_line(port: int, pub: Path, names: tuple[str, ...] = ("127.0.0.1",)) -> str:
    kind, key = pub.read_text().split()[:2]
    return ",".join(f"[{name}]:{port}" for name in names) + f" {kind} {key}\n"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start(
    folder: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost"), client_key: Path | None = None
) -> Sshd:
    """Start sshd for this user on a free port; `names` are the host names known_hosts vouches for.

    `client_key`: the key clients log in with (another daemon's, so one identity reaches both)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)  # sshd exits without its privilege separation folder
    host_key = folder / "host_ed25519"
    keygen(host_key, "flowlib-test-host")
    if client_key is None:
        client_key = folder / "client_ed25519"
        keygen(client_key, "flowlib-test-client")
    for _ in range(5):
        port = free_port()
        config = folder / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {client_key}.pub\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
            f"StrictModes no\nAllowUsers {getpass.getuser()}\nMaxSessions 64\nMaxStartups 64\n"
            "LogLevel VERBOSE\nSubsystem sftp internal-sftp\n"
        )
        log = folder / "sshd.log"
        process = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        # A daemon that lost the race for the port dies quietly; another may answer on it.
        while time.monotonic() < deadline and process.poll() is None and not _answers(port):
            time.sleep(0.05)
        if process.poll() is None and _answers(port):
            known_hosts = folder / "known_hosts"
            known_hosts.write_text(known_hosts_line(port, host_key.with_suffix(".pub"), names))
            return Sshd(port, process, client_key, known_hosts, host_key.with_suffix(".pub"), folder, log)
        if process.poll() is None:
            process.kill()
        process.wait()
    raise RuntimeError(f"sshd did not start; see {folder / 'sshd.log'}")


@contextlib.contextmanager
def running(folder: Path) -> Iterator[Sshd]:
    daemon = start(folder)
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def two_hosts(folder: Path) -> Iterator[tuple[Sshd, Sshd, Path]]:
    """Two daemons on 127.0.0.1 (two ports, two host keys: two "hosts") that one client key
    reaches, and a known_hosts file vouching for both."""
    first = start(folder / "a", names=("127.0.0.1",))
    try:
        second = start(folder / "b", names=("127.0.0.1",), client_key=first.identity_file)
        try:
            known_hosts = folder / "known_hosts"
            known_hosts.write_text(first.known_hosts.read_text() + second.known_hosts.read_text())
            yield first, second, known_hosts
        finally:
            second.stop()
    finally:
        first.stop()
