"""The hosts of the `ssh` executor: parsing `[executors.ssh] hosts` and its `[[executors.ssh.host]]`
tables (labels, accelerators), and opening a connection (host key verified against known_hosts)
with its SFTP session and workdir."""

from __future__ import annotations

import asyncio
import getpass
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from executors.ssh_transfer import MARKER
from flowlib.errors import ConfigError
from flowlib.resources import Machine

log = logging.getLogger("flowlib.executors.ssh")

CONNECT_TIMEOUT_S = 15.0


class Unusable(Exception):
    """A host could not be used for an attempt before anything ran there."""


class HostDown(Unusable):
    """A host cannot be reached, or its workdir cannot be used: try it again later."""


@dataclass
class Host:
    label: str
    user: str
    hostname: str
    port: int
    slots: int
    gpus: int = 0
    gpu_type: str | None = None
    labels: frozenset[str] = frozenset()
    busy: int = 0
    free_gpus: list[int] = field(default_factory=list)  # device ids no attempt holds
    conn: Any = None
    sftp: Any = None
    workdir: str = ""
    connecting: asyncio.Task | None = None
    down_until: float = 0.0
    reason: str = ""
    refused: str | None = None  # a host-key mismatch: never used again by this executor
    have: set[str] = field(default_factory=set)  # keys of files known to be on the host

    def __post_init__(self) -> None:
        self.free_gpus = list(range(self.gpus))

    def connected(self) -> bool:
        return self.conn is not None and not self.conn.is_closed()

    def machine(self) -> Machine:
        """What the host declares, for placement: its slots count as its CPUs."""
        kinds = frozenset({self.gpu_type.lower()} if self.gpu_type else ())
        return Machine(f"ssh host {self.label}", self.slots, self.gpus, None, kinds, self.labels)


def parse_host(entry: str, slots: int) -> Host:
    """Parse "user@host:port" ("[v6addr]:port" too); no user means the current one, no port 22."""
    user, _, rest = entry.rpartition("@")
    host, port = rest, "22"
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else port
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"[executors.ssh] hosts: {entry!r} is not user@host[:port]")
    label = host if port == "22" else f"{host}:{port}"
    return Host(label, user or getpass.getuser(), host, int(port), slots)


_TABLE_KEYS = {"address": str, "labels": list, "gpu_type": str, "gpus": int, "slots": int}


def parse_hosts(settings: Any, slots: int) -> list[Host]:
    """The hosts of `hosts = [...]` and of each `[[executors.ssh.host]]` table, in that order.

    Hosts are told apart by address and port: the same one twice is a configuration error."""
    entries, tables = settings.get("hosts") or [], settings.get("host") or []
    if not isinstance(entries, list) or not all(isinstance(h, str) for h in entries):
        raise ConfigError('[executors.ssh] hosts: list the hosts to run on, e.g. hosts = ["user@host:22"]')
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("[executors.ssh] host: declare each host as a [[executors.ssh.host]] table")
    if not entries and not tables:
        raise ConfigError(
            '[executors.ssh] hosts: list the hosts to run on, e.g. hosts = ["user@host:22"], '
            "or declare [[executors.ssh.host]] tables"
        )
    hosts = [parse_host(entry, slots) for entry in entries]
    hosts += [_parse_table(index, table, slots) for index, table in enumerate(tables)]
    seen: dict[tuple[str, int], str] = {}
    for host in hosts:
        key = (host.hostname.lower(), host.port)
        if key in seen:
            raise ConfigError(f"[executors.ssh] host {host.label} is listed twice")
        seen[key] = host.label
    return hosts


def _parse_table(index: int, table: dict[str, Any], slots: int) -> Host:
    where = f"[[executors.ssh.host]] #{index + 1}"
    for key, value in table.items():
        kind = _TABLE_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key '{key}'; known keys: {', '.join(_TABLE_KEYS)}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{where}: key '{key}' must be {kind.__name__}, got {value!r}")
    if "address" not in table:
        raise ConfigError(f'{where}: needs address = "user@host:port"')
    labels = table.get("labels", [])
    if not all(isinstance(label, str) and label.strip() for label in labels):
        raise ConfigError(f"{where}: labels must be non-empty strings, got {labels!r}")
    gpus, own_slots = table.get("gpus", 0), table.get("slots", slots)
    if gpus < 0 or own_slots < 1:
        raise ConfigError(f"{where}: gpus must be >= 0 and slots >= 1, got gpus={gpus}, slots={own_slots}")
    host = parse_host(table["address"], own_slots)
    host.gpus, host.gpu_type, host.labels = gpus, table.get("gpu_type"), frozenset(labels)
    host.free_gpus = list(range(gpus))
    return host


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def open_host(host: Host, identity: str | None, known_hosts: Any, workdir: str) -> None:
    """Connect to `host` and make its workdir; raise Unusable (a refused host key, for good)
    or HostDown (unreachable, or the workdir unusable)."""
    keys: dict[str, Any] = {"client_keys": [identity], "agent_path": None} if identity else {}
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                host.hostname,
                host.port,
                username=host.user,
                known_hosts=known_hosts,
                connect_timeout=CONNECT_TIMEOUT_S,
                keepalive_interval=15,
                keepalive_count_max=3,
                **keys,
            ),
            CONNECT_TIMEOUT_S + 5,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        host.refused = (
            f"ssh host {host.label} refused: its host key does not match the known_hosts file "
            f"{known_hosts} ({describe(exc)}); not retried on this host"
        )
        log.warning("%s", host.refused)
        raise Unusable(host.refused) from None
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
        raise HostDown(f"ssh host {host.label} cannot be reached ({describe(exc)})") from None
    try:
        sftp = await conn.start_sftp_client()
        folder = workdir
        if folder == "~" or folder.startswith("~/") or not folder.startswith("/"):
            home = await sftp.realpath(".")
            folder = posixpath.join(home, folder[2:] if folder.startswith("~/") else folder.lstrip("~"))
        await sftp.makedirs(folder, exist_ok=True)
        async with sftp.open(posixpath.join(folder, MARKER), "wb") as f:
            await f.write(b"a flowlib ssh executor workdir\n")
    except (OSError, asyncssh.Error) as exc:
        conn.close()
        raise HostDown(f"ssh host {host.label}: cannot use workdir {workdir!r} ({describe(exc)})") from None
    host.conn, host.sftp, host.workdir = conn, sftp, folder.rstrip("/") or "/"
    host.down_until, host.have = 0.0, set()
