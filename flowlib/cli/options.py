"""Options several commands share, and the helpers that resolve them."""

from __future__ import annotations

from typing import Any

import click

from flowlib.config import Config, load


def db_option(fn: Any) -> Any:
    return click.option(
        "--db", "db", metavar="URL", default=None, help="Database URL (overrides FLOW_DB_URL and flow.toml)."
    )(fn)


def server_option(fn: Any) -> Any:
    return click.option(
        "--server", "server", metavar="URL", default=None, help="Talk to this flow server (else FLOW_SERVER)."
    )(fn)


def json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(fn)


def params_options(fn: Any) -> Any:
    fn = click.option(
        "--params-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Parameters from a JSON or TOML file; -p beats it.",
    )(fn)
    return click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="NAME=VALUE",
        help="A workflow parameter, parsed by its annotation (repeatable).",
    )(fn)


def config(db: str | None = None, executor: str | None = None) -> Config:
    return load(db=db, executor=executor)
