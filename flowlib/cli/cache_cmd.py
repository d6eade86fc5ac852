"""`flow cache ls|clear|gc`: inspect and prune the cache and the artifact store."""

from __future__ import annotations

import json

import click

from flowlib.cli.options import config, db_option, json_option


def _open(db: str | None):  # type: ignore[no-untyped-def]
    from scheduler.runs import connect, open_store

    settings = config(db)
    return connect(settings), open_store(settings)


@click.group("cache")
def cache_group() -> None:
    """Inspect and prune the cache index and the artifact store."""


@cache_group.command("ls")
@click.option("--operator", default=None, help="Only entries of this operator (qualname).")
@db_option
@json_option
def ls(operator: str | None, db: str | None, as_json: bool) -> None:
    """List cache entries: key, operator, node and run that made them, output sizes."""
    from scheduler.store.cache_index import list_entries

    engine, _ = _open(db)
    entries = list_entries(engine, operator)
    if as_json:
        click.echo(json.dumps(entries))
        return
    for entry in entries:
        click.echo(
            f"{entry['key'][:16]}  {entry['operator']:<24} {entry['node']:<24} run {entry['run_id']}  {entry['size']} B"
        )


@cache_group.command("clear")
@click.option("--operator", default=None, help="Only entries of this operator (qualname).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@db_option
def clear(operator: str | None, yes: bool, db: str | None) -> None:
    """Forget cache entries (artifacts stay until `flow cache gc`)."""
    from scheduler.store.cache_index import clear_entries

    what = f"cache entries of operator '{operator}'" if operator else "all cache entries"
    if not yes and not click.confirm(f"Forget {what}?", default=False):
        raise click.Abort()
    engine, _ = _open(db)
    click.echo(f"removed {clear_entries(engine, operator)} cache entries")


@cache_group.command("gc")
@click.option("--dry-run", is_flag=True, help="Report what would be removed.")
@db_option
def gc(dry_run: bool, db: str | None) -> None:
    """Remove artifacts that no run, cache entry or checkpoint references; report bytes freed."""
    from scheduler.store.cache_index import collect_garbage

    engine, store = _open(db)
    count, freed = collect_garbage(engine, store, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {count} artifacts, {freed} bytes freed"
        if not dry_run
        else f"{verb} {count} artifacts ({freed} bytes)"
    )


COMMANDS = [cache_group]
