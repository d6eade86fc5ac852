"""`flow sweep`: tune a workflow's parameters with Optuna; `flow sweep status | best | resume NAME`.

`flow sweep FILE ...` starts (or continues) a sweep, and `flow sweep status NAME` reads one: the
group hands every argument list whose first word is not one of its commands to the start form.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import click

from flowlib.cli.options import config, db_option, json_option, params_options, server_option

START = "start"


class _SameName(click.Context):
    """The start form's context: its usage reads `flow sweep FILE ...`, not `flow sweep start FILE ...`."""

    @property
    def command_path(self) -> str:
        return self.parent.command_path if self.parent is not None else super().command_path


class SweepGroup(click.Group):
    def __init__(self, *args: Any, start: click.Command, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start = start
        start.context_class = _SameName

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [START, *args]
        return super().parse_args(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.start if cmd_name == START else super().get_command(ctx, cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The start form's usage, text and options, then the group's commands."""
        start = _SameName(self.start, info_name=START, parent=ctx)
        self.start.format_usage(start, formatter)
        self.start.format_help_text(start, formatter)
        self.start.format_options(start, formatter)
        self.format_commands(ctx, formatter)
        self.start.format_epilog(start, formatter)

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.start.get_short_help_str(limit)


def _shown(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _say(line: str) -> None:
    click.echo(line, err=True)


def _quiet_optuna() -> None:
    """Optuna logs each trial at INFO; `flow sweep` prints its own line per trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _stdout_kept_for(as_json: bool) -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def _finish(status: dict[str, Any], as_json: bool) -> None:
    """Print the sweep's outcome; exit 0 when a trial completed, else 1."""
    counts: dict[str, int] = {}
    for trial in status["trials"]:
        counts[trial["state"]] = counts.get(trial["state"], 0) + 1
    shown = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    best = status["best"]
    click.echo(f"sweep {status['name']}: {len(status['trials'])} trials ({shown})", err=True)
    if best is None:
        click.echo("error: no trial completed", err=True)
    if as_json:
        click.echo(json.dumps(status))
    elif best is not None:
        click.echo(json.dumps(best))
    sys.exit(0 if best is not None else 1)


@click.command(START)
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("workflow", required=False)
@click.option(
    "--space",
    "space",
    multiple=True,
    metavar="NAME=SPEC",
    help="A tuned parameter: int(lo,hi), float(lo,hi), loguniform(lo,hi) or choice(a,b,...) (repeatable).",
)
@click.option("--objective", metavar="KEY", help="The output field or logged metric to tune for (required).")
@click.option(
    "--direction",
    type=click.Choice(["minimize", "maximize"]),
    default="minimize",
    show_default=True,
    help="Whether a lower or a higher objective is better.",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Trials in all (every state counts).",
)
@click.option(
    "--parallel", type=click.IntRange(min=1), default=1, show_default=True, help="Trials running at once."
)
@click.option(
    "--sampler",
    type=click.Choice(["tpe", "random", "grid"]),
    default="tpe",
    show_default=True,
    help="Optuna's sampler.",
)
@click.option(
    "--pruner",
    type=click.Choice(["none", "median"]),
    default="none",
    show_default=True,
    help="median: Optuna's MedianPruner stops trials whose objective, logged with step=, trails.",
)
@click.option("--seed", type=int, default=None, help="Seed of the sampler.")
@click.option(
    "--name", default=None, help="The sweep's name (default: the workflow's); an existing sweep continues."
)
@params_options
@click.option("--executor", default=None, help="Default executor for nodes that name none.")
@click.option(
    "--server",
    metavar="URL",
    default=None,
    help="Submit the trials to this flow server's pool (else FLOW_SERVER): the sweep's study is "
    "kept there, and this command follows the trials until they are done.",
)
@db_option
@json_option
def start(
    file: str,
    workflow: str | None,
    space: tuple[str, ...],
    objective: str | None,
    direction: str,
    trials: int,
    parallel: int,
    sampler: str,
    pruner: str,
    seed: int | None,
    name: str | None,
    params: tuple[str, ...],
    params_file: str | None,
    executor: str | None,
    server: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Tune WORKFLOW's parameters from FILE: each trial is a run, and the steps that do not
    depend on a tuned parameter run once for the whole sweep.

    Exit code 0 when its trials are done and at least one completed, 1 when none
    completed, 2 for a usage or definition error, 130 when interrupted. With
    --json it prints `flow sweep status --json`'s object; else the best trial.

    \b
    Then: flow sweep status NAME, flow sweep best NAME --json, flow sweep resume NAME.
    """
    from flowlib.loading import select_workflow
    from flowlib.params import parse_params, read_params_file, split_assignments
    from scheduler.sweeps.space import SweepError, split_space

    client = client_for(server, db)
    settings = None if client is not None else config(db, executor)
    if not objective:
        raise SweepError("--objective KEY is required: the output field or logged metric to tune for")
    with _stdout_kept_for(as_json):
        if settings is not None:  # trials run here: the workers' imports overlap with this process's
            from executors.early import start_early

            start_early(file, settings)  # before the sweep's own modules: the template starts sooner
        from scheduler.sweeps.start import SweepRequest, start_sweep

        wf = select_workflow(file, workflow)
        fixed = parse_params(
            wf, split_assignments(params), read_params_file(params_file) if params_file else None
        )
        request = SweepRequest(
            objective=objective,
            space=split_space(space),
            direction=direction,
            trials=trials,
            parallel=parallel,
            sampler=sampler,
            pruner=pruner,
            seed=seed,
            name=name,
            params=fixed,
            executor=executor,
        )
        _quiet_optuna()
        if client is not None:
            from scheduler.sweeps.remote import start_remote_sweep

            status = start_remote_sweep(wf, request, client, report=_say)
        else:
            status = start_sweep(wf, request, settings, report=_say)
    _finish(status, as_json)


def client_for(server: str | None, db: str | None = None) -> Any:
    """The client of the server a sweep command goes to (`--server`, else FLOW_SERVER unless
    `--db` names a database), or None: flags beat the environment."""
    from flowlib.cli.remote import client_for
    from flowlib.errors import ConfigError

    if server and db:
        raise ConfigError("--db and --server: a sweep is either in a database here or on a server; give one")
    return None if db else client_for(server)


def _read(name: str, db: str | None, server: str | None) -> dict[str, Any]:
    """A sweep's status, from the server (`--server`, else FLOW_SERVER) or the database."""
    import urllib.parse

    client = client_for(server, db)
    if client is not None:
        return client.get(f"/api/sweeps/{urllib.parse.quote(name, safe='')}")
    from scheduler.runs import connect
    from scheduler.sweeps.read import sweep_status

    return sweep_status(connect(config(db)), name)


@click.command("status")
@click.argument("name")
@db_option
@server_option
@json_option
def status(name: str, db: str | None, server: str | None, as_json: bool) -> None:
    """Print a sweep's trials (number, state, objective value, parameters, run) and its best."""
    shown = _read(name, db, server)
    if as_json:
        click.echo(json.dumps(shown))
        return
    click.echo(f"sweep {shown['name']}: {shown['direction']} {shown['objective']} ({shown['workflow']})")
    for trial in shown["trials"]:
        value = "-" if trial["value"] is None else f"{trial['value']:.6g}"
        params = _shown(trial["params"])
        line = (
            f"{trial['number']:>4}  {trial['state']:<8}  {value:>12}  {trial['run_id'] or '-':<12}  {params}"
        )
        if trial.get("error"):
            line += f"  ({trial['error']})"
        click.echo(line)
    best = shown["best"]
    click.echo(
        f"best: trial {best['trial']}, {shown['objective']}={best['value']:.6g}" if best else "best: none yet"
    )


@click.command("best")
@click.argument("name")
@db_option
@server_option
@json_option
def best(name: str, db: str | None, server: str | None, as_json: bool) -> None:
    """Print a sweep's best trial: its number, run, parameters and objective value (exit 1 when
    no trial completed)."""
    found = _read(name, db, server)["best"]
    if found is None:
        click.echo(f"error: no trial of sweep '{name}' completed", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(found))
    else:
        params = _shown(found["params"])
        click.echo(f"trial {found['trial']} (run {found['run_id']}): {found['value']:.6g}  {params}")


@click.command("resume")
@click.argument("name")
@db_option
@server_option
@json_option
def resume(name: str, db: str | None, server: str | None, as_json: bool) -> None:
    """Continue a sweep that was killed or stopped: finished trials are kept, unfinished ones
    resumed from their cached nodes, and new ones run up to its trial count. A sweep on a server
    (--server, else FLOW_SERVER) is continued from its project's folder."""
    client = client_for(server, db)
    with _stdout_kept_for(as_json):
        _quiet_optuna()
        if client is not None:
            from scheduler.sweeps.remote import resume_remote_sweep

            status = resume_remote_sweep(name, client, report=_say)
        else:
            from scheduler.sweeps.start import resume_sweep

            status = resume_sweep(name, config(db), report=_say)
    _finish(status, as_json)


sweep = SweepGroup("sweep", start=start, commands=[status, best, resume])
COMMANDS = [sweep]
