"""`flow server`, `flow ui` and `flow token`: the scheduler service and who may use it."""

from __future__ import annotations

import secrets
import sys

import click

from flowlib.cli.options import config, db_option


@click.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on."
)
@click.option(
    "--max-runs",
    type=click.IntRange(min=1),
    default=None,
    help="Runs executed at once ([server] max_runs, 4).",
)
@click.option("--no-auth", is_flag=True, help="Accept requests without a token (only on a loopback address).")
@db_option
def server(host: str, port: int, max_runs: int | None, no_auth: bool, db: str | None) -> None:
    """Run the scheduler service: the HTTP API, the web UI, and a scheduler that claims queued
    runs from the database and executes them with this machine's executors.

    Several servers on one database form a pool: each queued run is claimed by one of them,
    and the runs of a server that dies are adopted by another. SIGTERM or Ctrl-C stops
    claiming, lets running runs go on for [server] drain_seconds, releases the rest for
    adoption and exits 0. Requests need a token (`flow token create`).
    """
    from scheduler.server.service import serve

    def announce(url: str, server_id: str) -> None:
        print(f"flow server {server_id} listening on {url}", file=sys.stderr, flush=True)

    sys.exit(serve(config(db), host=host, port=port, max_runs=max_runs, auth=not no_auth, announce=announce))


@click.command("ui")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on."
)
@db_option
def ui(port: int, db: str | None) -> None:
    """Open the web UI over this project's runs: a server on 127.0.0.1, for you alone.

    It prints a URL with a one-time token (as Jupyter does); open it in a browser. Runs
    launched from the browser run here.
    """
    from scheduler.server.service import serve

    token = secrets.token_urlsafe(24)

    def announce(url: str, _server_id: str) -> None:
        print(f"flow ui: open {url}/?token={token}", file=sys.stderr, flush=True)

    sys.exit(serve(config(db), host="127.0.0.1", port=port, ui_token=token, announce=announce))


@click.group("token")
def token() -> None:
    """Create and revoke the tokens that clients and browsers use with `flow server`."""


@token.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May cancel and resume anyone's runs.")
@db_option
def create(name: str, admin: bool, db: str | None) -> None:
    """Print a new token for NAME (once: only its hash is kept). A NAME that exists gets one more.

    Run it where the server's database is reachable; clients read the token from
    FLOW_TOKEN, else [server] token in their flow.toml.
    """
    from scheduler.runs import connect
    from scheduler.server.auth import create_token

    click.echo(create_token(connect(config(db)), name, admin=admin))


@token.command("revoke")
@click.argument("name")
@db_option
def revoke(name: str, db: str | None) -> None:
    """Revoke every token of NAME."""
    from flowlib.errors import FlowError
    from scheduler.runs import connect
    from scheduler.server.auth import revoke_tokens

    count = revoke_tokens(connect(config(db)), name)
    if not count:
        raise FlowError(f"no live token named '{name}'")
    click.echo(f"revoked {count} token(s) of {name}", err=True)


COMMANDS = [server, ui, token]
