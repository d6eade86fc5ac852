"""`flow runs`: list recorded runs; `flow runs delete` and `flow runs prune` remove them."""

from __future__ import annotations

import json

import click

from flowlib.cli.inspect_cmd import open_db
from flowlib.cli.options import db_option, json_option, server_option

STATUSES = ["queued", "pending", "running", "succeeded", "failed", "cancelled", "interrupted"]


@click.group("runs", invoke_without_command=True)
@click.option("--workflow", default=None, help="Only runs of this workflow.")
@click.option("--status", default=None, type=click.Choice(STATUSES), help="Only runs in this state.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most N runs, newest first."
)
@db_option
@server_option
@json_option
@click.pass_context
def runs(
    ctx: click.Context,
    workflow: str | None,
    status: str | None,
    limit: int,
    db: str | None,
    server: str | None,
    as_json: bool,
) -> None:
    """List recorded runs, newest first (`flow runs delete|prune` remove them).

    A run whose scheduler died reads `interrupted`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from flowlib.cli.remote import client_for

    client = client_for(server)
    if client is not None:
        objects = client.get("/api/runs", workflow=workflow, status=status, limit=limit)
    else:
        from scheduler.store.listing import find_runs, run_objects

        engine, reader = open_db(db)
        objects = run_objects(
            engine, reader, find_runs(engine, workflow=workflow, status=status, limit=limit)
        )
    if as_json:
        click.echo(json.dumps(objects, default=repr))
        return
    for run in objects:
        click.echo(f"{run['run_id']}  {run['status']:<11} {run['workflow']:<20} {run['file']}")


@runs.command("delete")
@click.argument("run_ids", nargs=-1, required=True)
@db_option
def delete(run_ids: tuple[str, ...], db: str | None) -> None:
    """Delete runs and everything recorded about them (no confirmation asked).

    Their artifacts stay until `flow cache gc`; cache entries they made stay too.
    """
    from flowlib.errors import FlowError
    from scheduler.store import repository as repo
    from scheduler.store.cache_index import delete_runs
    from scheduler.store.readback import scheduler_alive

    engine, _ = open_db(db)
    with engine.connect() as conn:
        found = [repo.require_run(conn, run_id) for run_id in run_ids]
    for run in found:
        if scheduler_alive(run) or run.status == "queued":
            raise FlowError(
                f"run {run.id} is {run.status}: cancel it (`flow cancel {run.id}`) before deleting it"
            )
    delete_runs(engine, [run.id for run in found])
    click.echo(f"deleted {len(found)} runs", err=True)


@runs.command("prune")
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="Age, like 30d, 12h, 2w.")
@click.option("--keep-failed", is_flag=True, help="Keep failed runs (to resume them later).")
@db_option
def prune(older_than: str, keep_failed: bool, db: str | None) -> None:
    """Delete every run that ended longer than DURATION ago (no confirmation asked).

    Queued and running runs are never pruned; `flow cache gc` then frees their artifacts.
    """
    from flowlib.errors import FlowError
    from scheduler.store.cache_index import delete_runs, parse_duration, prunable

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise FlowError(f"--older-than: {exc}") from None
    engine, _ = open_db(db)
    doomed = prunable(engine, seconds, keep_failed=keep_failed)
    delete_runs(engine, doomed)
    click.echo(f"pruned {len(doomed)} runs", err=True)


COMMANDS = [runs]
