"""`flow runs`: list recorded runs; `flow runs delete` and `flow runs prune` remove them."""

from __future__ import annotations

import json

import click

from flowlib.cli.inspect_cmd import open_db
from flowlib.cli.options import db_option, json_option

STATUSES = ["queued", "pending", "running", "succeeded", "failed", "cancelled", "interrupted"]


@click.group("runs", invoke_without_command=True)
@click.option("--workflow", default=None, help="Only runs of this workflow.")
@click.option("--status", default=None, type=click.Choice(STATUSES), help="Only runs in this state.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most N runs, newest first."
)
@db_option
@json_option
@click.pass_context
def runs(
    ctx: click.Context, workflow: str | None, status: str | None, limit: int, db: str | None, as_json: bool
) -> None:
    """List recorded runs, newest first (`flow runs delete|prune` remove them).

    A run whose scheduler died reads `interrupted`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from scheduler.store import repository as repo
    from scheduler.store.readback import result_of, shown_status

    engine, reader = open_db(db)
    stored = {
        "interrupted": ["running", "pending", "interrupted"],
        "running": ["running"],
        "pending": ["pending"],
    }
    with engine.connect() as conn:
        found = []
        for row in repo.list_runs(
            conn, workflow=workflow, statuses=stored.get(status or "", [status] if status else None)
        ):
            if status is None or shown_status(row) == status:
                found.append(row)
                if len(found) == limit:
                    break
    if as_json:
        objects = []
        for run in found:
            shown = result_of(run, [], reader, engine, with_nodes=False, classes=False).to_json(
                with_nodes=False
            )
            shown.update(
                created_at=run.created_at,
                ended_at=run.ended_at,
                file=run.file,
                params=run.params,
                user=run.user,
            )
            objects.append(shown)
        click.echo(json.dumps(objects, default=repr))
        return
    for run in found:
        click.echo(f"{run.id}  {shown_status(run):<11} {run.workflow:<20} {run.file}")


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
    from scheduler.store.cache_index import delete_runs, parse_duration, prunable

    from flowlib.errors import FlowError

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise FlowError(f"--older-than: {exc}") from None
    engine, _ = open_db(db)
    doomed = prunable(engine, seconds, keep_failed=keep_failed)
    delete_runs(engine, doomed)
    click.echo(f"pruned {len(doomed)} runs", err=True)


COMMANDS = [runs]
