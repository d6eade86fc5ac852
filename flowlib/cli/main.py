"""`flow`: the command line. Every FlowError becomes one line on stderr and its exit code."""

from __future__ import annotations

import atexit
import gc
import sys
from typing import Any

import click

from flowlib.errors import FlowError


class FlowGroup(click.Group):
    """A click group that turns flowlib errors into one clear line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FlowError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=FlowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flowlib", prog_name="flow")
def cli() -> None:
    """Run typed ML pipelines as DAGs: persisted, cached by content, resumable.

    Start with `flow run pipeline.py`; `flow COMMAND --help` tells more.
    """


def _register() -> None:
    from flowlib.cli import (
        cache_cmd,
        db_cmd,
        inspect_cmd,
        run_cmd,
        runs_cmd,
        server_cmd,
        show_cmd,
        submit_cmd,
        sweep_cmd,
    )

    for module in (
        show_cmd,
        run_cmd,
        runs_cmd,
        inspect_cmd,
        submit_cmd,
        server_cmd,
        sweep_cmd,
        db_cmd,
        cache_cmd,
    ):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    # The interpreter's last garbage collections at exit walked every object SQLAlchemy and a
    # run had made: ~0.1 s of each command. Frozen, they are left to the end of the process.
    atexit.register(gc.freeze)
    sys.exit(cli.main(standalone_mode=True))
