"""`flow`: the command line. Every FlowError becomes one line on stderr and its exit code."""

from __future__ import annotations

import atexit
import gc
import importlib
import sys
from typing import Any

import click

from flowlib.errors import FlowError

# command -> the module of flowlib.cli that defines it (in its COMMANDS): a command imports only
# its own module, not every other command's
COMMAND_MODULES = {
    "show": "show_cmd",
    "run": "run_cmd",
    "resume": "run_cmd",
    "runs": "runs_cmd",
    **dict.fromkeys(("status", "logs", "outputs", "metrics", "why", "cancel"), "inspect_cmd"),
    **dict.fromkeys(("submit", "deploy", "deployments", "launch"), "submit_cmd"),
    **dict.fromkeys(("server", "ui", "token"), "server_cmd"),
    "sweep": "sweep_cmd",
    "db": "db_cmd",
    "cache": "cache_cmd",
}


class FlowGroup(click.Group):
    """A click group that turns flowlib errors into one clear line, never a traceback, and
    imports a command's module when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        commands = importlib.import_module(f"flowlib.cli.{module}").COMMANDS
        return next((command for command in commands if command.name == cmd_name), None)

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


def main() -> None:
    """Console-script entry point."""
    # The interpreter's last garbage collections at exit walked every object SQLAlchemy and a
    # run had made: ~0.1 s of each command. Frozen, they are left to the end of the process.
    atexit.register(gc.freeze)
    sys.exit(cli.main(standalone_mode=True))
