"""Commands that read recorded runs: status, logs, outputs, metrics, why, cancel.

Each one reads the local database, or with `--server` (or FLOW_SERVER) the server's API, and
prints the same either way. None of them imports the user's pipeline, unless `flow outputs`
shows a value that needs the pipeline's classes to load.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from flowlib.cli.options import config, db_option, json_option, server_option


def open_db(db: str | None) -> tuple[Any, Any]:
    """The database engine and a reader of artifacts (store files and inline database rows)."""
    from scheduler.runs import connect, open_store
    from scheduler.store.blobs import Blobs

    settings = config(db)
    engine = connect(settings)
    return engine, Blobs(engine).reader(open_store(settings))


def _remote(server: str | None) -> Any:
    from flowlib.cli.remote import client_for

    return client_for(server)


@click.command("status")
@click.argument("run_id")
@db_option
@server_option
@json_option
def status(run_id: str, db: str | None, server: str | None, as_json: bool) -> None:
    """Show a run's nodes: status, attempts, cache hits, durations, errors (RUN_ID may be `latest`)."""
    client = _remote(server)
    if client is not None:
        shown = client.get(f"/api/runs/{run_id}")
    else:
        from scheduler.store.listing import run_with_nodes

        engine, reader = open_db(db)
        shown = run_with_nodes(engine, reader, run_id)
    if as_json:
        click.echo(json.dumps(shown, default=repr))
        return
    click.echo(f"run {shown['run_id']}  workflow {shown['workflow']}  {shown['status']}")
    if shown.get("resumed_from"):
        click.echo(f"resumed from {shown['resumed_from']}")
    for node in shown["nodes"]:
        duration = f"{node['duration_s']:.2f}s" if node["duration_s"] is not None else "-"
        error = node["error"]
        error = f"  {error.get('type')}: {error.get('message')}" if isinstance(error, dict) else ""
        click.echo(f"  {node['name']:<30} {node['status']:<16} attempts={node['attempts']} {duration}{error}")


@click.command("logs")
@click.argument("run_id")
@click.argument("node", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing NODE's log while it runs, until it ends.")
@db_option
@server_option
def logs(run_id: str, node: str | None, follow: bool, db: str | None, server: str | None) -> None:
    """Print what nodes printed (stdout, stderr, current.logger, logging), by attempt.

    A node that came from the cache shows the log of the run that computed it.
    """
    if follow and node is None:
        raise click.UsageError("--follow needs a NODE")
    fetch = _log_source(run_id, node, db, server)
    if not follow:
        for log in fetch()[0]:
            _print_attempt(log)
        return
    printed: dict[int, int] = {}  # attempt -> characters printed
    while True:
        found, ended = fetch()
        for log in found:
            new = log["text"][printed.get(log["number"], 0) :]
            if new:
                click.echo(new, nl=False)
                printed[log["number"]] = len(log["text"])
        if ended:
            return
        time.sleep(0.5)


def _log_source(run_id: str, node: str | None, db: str | None, server: str | None) -> Any:
    """A function returning (attempt logs as dicts, whether NODE has ended)."""
    client = _remote(server)
    if client is not None:
        path = f"/api/runs/{run_id}/nodes/{node}/logs" if node else f"/api/runs/{run_id}/logs"

        def remote() -> tuple[list[dict[str, Any]], bool]:
            found = client.get(path)
            run = client.get(f"/api/runs/{run_id}")
            state = next((n["status"] for n in run["nodes"] if n["name"] == node), None)
            return found, _ended(state, run["status"], found)

        return remote
    from scheduler.store import repository as repo
    from scheduler.store.logs import node_logs
    from scheduler.store.readback import shown_status

    engine, _ = open_db(db)
    with engine.connect() as conn:
        run = repo.require_run(conn, run_id)
        if node is not None:
            repo.require_node(conn, run, node)

    def local() -> tuple[list[dict[str, Any]], bool]:
        with engine.connect() as conn:
            current = repo.require_run(conn, run.id)
            found = [vars(log) for log in node_logs(conn, current, node)]
            state = repo.require_node(conn, current, node).status if node else None
        return found, _ended(state, shown_status(current), found)

    return local


def _ended(state: str | None, run_state: str, found: list[dict[str, Any]]) -> bool:
    """Whether a followed node has ended and its log is whole."""
    from flowlib.results import FINAL

    if run_state not in ("queued", "pending", "running"):
        return True
    return state in FINAL and all(log["status"] != "running" for log in found)


def _print_attempt(log: dict[str, Any]) -> None:
    origin = f", from {log['origin']}" if log.get("origin") else ""
    click.echo(f"=== {log['node']} (attempt {log['number']}, {log['status']}{origin}) ===")
    if log["text"]:
        click.echo(log["text"].rstrip("\n"))


@click.command("outputs")
@click.argument("run_id")
@click.argument("node", required=False)
@click.option(
    "--path", "show_path", is_flag=True, help="Print where each artifact is (a file path, or the database)."
)
@db_option
@server_option
@json_option
def outputs(
    run_id: str, node: str | None, show_path: bool, db: str | None, server: str | None, as_json: bool
) -> None:
    """Print a run's outputs, or one node's outputs by name (RUN_ID may be `latest`).

    With --path, print each output's artifact file instead: `numpy.load`, `torch.load`,
    `json.load` and `pickle.load` open them as their own files.
    """
    client = _remote(server)
    if client is not None:
        value = client.get(f"/api/runs/{run_id}/outputs", node=node, path=show_path or None)
    else:
        from scheduler.store import outputs as view

        engine, reader = open_db(db)
        if show_path:
            value = view.paths(engine, reader, run_id, node)
        elif node is not None:
            value = view.node_values(engine, reader, run_id, node)
        else:
            value = view.run_values(engine, reader, run_id)
    if show_path and not as_json:
        for item in value:
            click.echo(f"{item['output']}\t{item['path'] or '(in the database)'}")
        return
    click.echo(json.dumps(value, default=repr, indent=None if as_json else 2))


@click.command("metrics")
@click.argument("run_id")
@db_option
@server_option
@json_option
def metrics(run_id: str, db: str | None, server: str | None, as_json: bool) -> None:
    """Print the metrics nodes logged with current.log_metric (a cached node's: those of the run
    that computed it, marked)."""
    client = _remote(server)
    if client is not None:
        rows = client.get(f"/api/runs/{run_id}/metrics")
    else:
        from scheduler.store import repository as repo
        from scheduler.store.logs import node_metrics

        engine, _ = open_db(db)
        with engine.connect() as conn:
            rows = node_metrics(conn, repo.require_run(conn, run_id))
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        step = "" if row["step"] is None else f" step={row['step']}"
        origin = f"  (from run {row['from_run']})" if row.get("from_run") else ""
        value = "nan" if row["value"] is None else f"{row['value']:g}"
        click.echo(f"{row['node']:<30} {row['name']}={value}{step}{origin}")


@click.command("why")
@click.argument("run_id")
@click.argument("node")
@db_option
@server_option
@json_option
def why(run_id: str, node: str, db: str | None, server: str | None, as_json: bool) -> None:
    """Explain why NODE of RUN_ID hit or missed the cache: which part of its key differs."""
    client = _remote(server)
    if client is not None:
        answer = client.get(f"/api/runs/{run_id}/nodes/{node}/why")
    else:
        from scheduler.store.why import explain

        answer = explain(open_db(db)[0], run_id, node)
    if as_json:
        click.echo(json.dumps(answer))
    else:
        click.echo(answer["summary"])
        for reason in answer["differences"]:
            click.echo(f"  - {reason}")


@click.command("cancel")
@click.argument("run_id")
@db_option
@server_option
def cancel(run_id: str, db: str | None, server: str | None) -> None:
    """Cancel a queued or running run: its running nodes are stopped and it ends `cancelled`.

    A live scheduler sees the request within a couple of seconds (its `flow run`
    then exits 130); a run whose scheduler is gone, or that no server claimed yet,
    is marked cancelled at once.
    """
    client = _remote(server)
    if client is not None:
        click.echo(client.post(f"/api/runs/{run_id}/cancel")["message"], err=True)
        return
    from scheduler.server.queue import cancel_queued
    from scheduler.store import repository as repo
    from scheduler.store.readback import scheduler_alive

    engine, _ = open_db(db)
    with engine.begin() as conn:
        run = repo.require_run(conn, run_id)
        if run.status == "queued" and cancel_queued(conn, run.id, "cancelled before it started"):
            click.echo(f"run {run.id} cancelled (it never started)", err=True)
            return
        run = repo.require_run(conn, run.id)
        if run.status not in ("running", "pending"):
            click.echo(f"run {run.id} is already {run.status}", err=True)
            return
        if scheduler_alive(run):
            repo.update_run(conn, run.id, cancel_requested=True)
            click.echo(f"cancel requested for run {run.id}", err=True)
            return
        repo.cancel_dead_run(conn, run.id, "cancelled by `flow cancel` (its scheduler was gone)")
    click.echo(f"run {run.id} cancelled (its scheduler was gone)", err=True)


COMMANDS = [status, logs, outputs, metrics, why, cancel]
