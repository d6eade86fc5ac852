"""`flow db upgrade|current`: database migrations."""

from __future__ import annotations

import click

from flowlib.cli.options import config, db_option


@click.group("db")
def db_group() -> None:
    """Manage the run database's schema (alembic migrations)."""


@db_group.command("upgrade")
@db_option
def upgrade(db: str | None) -> None:
    """Upgrade the database to this flowlib's schema (creating it when missing)."""
    from scheduler.store import db as database

    url = config(db).db
    revision = database.upgrade(url)
    click.echo(f"database at revision {revision}")


@db_group.command("current")
@db_option
def current(db: str | None) -> None:
    """Print the database's schema revision and this flowlib's head revision."""
    from scheduler.store import db as database

    url = config(db).db
    engine = database.connect(url, upgrade=False)
    click.echo(f"current: {database.current_revision(engine) or 'none'}  head: {database.head_revision()}")


COMMANDS = [db_group]
