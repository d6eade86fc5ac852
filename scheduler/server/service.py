"""`flow server` and `flow ui`: one long-running process with the HTTP API, the web UI and a
scheduler that claims and executes queued runs.

SIGTERM (or Ctrl-C) stops claiming, lets running runs go on for `[server] drain_seconds`,
then releases the rest for adoption by another server and exits 0.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from flowlib.config import Config
from flowlib.errors import ConfigError
from scheduler.runs import connect, open_store, os_user, start_executors


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """The server's listening socket; a port in use (or an address not here) is a ConfigError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None


def serve(
    config: Config,
    *,
    host: str,
    port: int,
    max_runs: int | None = None,
    auth: bool = True,
    ui_token: str | None = None,
    announce: Any = None,
) -> int:
    """Run a server until SIGTERM or Ctrl-C; return its exit code."""
    import uvicorn

    from scheduler.server.app import create_app
    from scheduler.server.auth import User
    from scheduler.server.context import ServerContext
    from scheduler.server.deployments import Launcher
    from scheduler.server.pool import PoolSettings, ServerPool

    if not auth and not loopback(host):
        raise ConfigError(
            f"--no-auth is refused on {host}: bind a loopback address (127.0.0.1) or use tokens"
        )
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    listening = listen(host, port)  # before anything starts: a port in use is exit 2, not a pool member
    port = listening.getsockname()[1]
    engine = connect(config)
    store = open_store(config)
    names = {config.executor, *(name for name in config.executors)}
    executors = start_executors(names, config)
    settings = PoolSettings(
        max_runs=max_runs or int(config.server["max_runs"]),
        lease_s=float(config.server["lease_seconds"]),
        drain_s=float(config.server["drain_seconds"]),
        fsync=config.fsync,
        default_executor=config.executor,
        db_outage_s=config.db_outage_s,
    )
    snapshots = config.home / "snapshots"
    launcher = Launcher(engine, store, snapshots, config.executor)
    url = f"http://{host}:{port}"
    pool = ServerPool(engine, store, executors, settings, home=config.home, url=url)
    me = os_user()
    pool.schedules = lambda: launcher.fire_due(me)
    ctx = ServerContext(
        engine,
        store,
        config.home,
        launcher,
        config.executor,
        auth=auth,
        os_user=me,
        max_code_mb=float(config.server["max_code_mb"]),
        pool=pool,
        local_tokens={ui_token: User(me, admin=True)} if ui_token else {},
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(ctx), host=host, port=port, log_level="warning", lifespan="off")
    )
    web = threading.Thread(
        target=server.run, kwargs={"sockets": [listening]}, name="flowlib-http", daemon=True
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pool.start()
    web.start()
    if announce is not None:
        announce(url, pool.server_id)
    while not stop.wait(0.5):  # a plain wait() would hold off the signal handlers
        pass
    print(
        f"draining: no new runs are claimed; running ones get {settings.drain_s:g} s",
        file=sys.stderr,
        flush=True,
    )
    pool.drain()
    server.should_exit = True
    web.join(timeout=10)
    engine.dispose()
    return 0
