"""`flow run` and `flow resume`."""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from typing import Any

import click

from flowlib.cli.options import config, db_option, json_option, params_options, server_option
from flowlib.cli.progress import Progress
from flowlib.results import RunResult

EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 130}


def _stdout_kept_for(as_json: bool) -> contextlib.AbstractContextManager:
    """With --json, stdout carries the result alone: what the pipeline prints as it is
    imported or runs in this process goes to stderr instead."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def report(result: RunResult, as_json: bool) -> None:
    """Print the run's outcome and exit with its code."""
    gc.freeze()  # the process exits next: no full collection need walk the run's result again
    if as_json:
        click.echo(json.dumps(result.to_json(), default=repr))
    else:
        if result.status == "succeeded":
            click.echo(json.dumps(result.outputs_json(), default=repr))
        elif result.error:
            click.echo(f"error: {result.error}", err=True)
            for node in result.nodes:
                if node.status == "failed" and node.error and node.error.get("traceback"):
                    click.echo(f"--- {node.name} ---\n{node.error['traceback'].rstrip()}", err=True)
    sys.exit(EXIT_CODES.get(str(result.status), 1))


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("workflow", required=False)
@params_options
@click.option(
    "--executor",
    default=None,
    help="Default executor for nodes that name none (local, inline, gpu, ssh, ray).",
)
@click.option("--max-parallel", type=click.IntRange(min=1), default=None, help="Run at most N nodes at once.")
@click.option("--no-cache", is_flag=True, help="Do not reuse cached results (new results are still stored).")
@click.option("--fail-fast", is_flag=True, help="Stop the run at the first failed node.")
@db_option
@click.option(
    "--server",
    metavar="URL",
    default=None,
    help="Submit it to this flow server and wait (FLOW_SERVER is not used here).",
)
@json_option
def run(
    file: str,
    workflow: str | None,
    params: tuple[str, ...],
    params_file: str | None,
    executor: str | None,
    max_parallel: int | None,
    no_cache: bool,
    fail_fast: bool,
    db: str | None,
    server: str | None,
    as_json: bool,
) -> None:
    """Build, validate, record and run WORKFLOW from FILE.

    Exit code 0 when the run succeeded, 1 when it failed, 2 for a usage,
    definition, type or configuration error, 130 when interrupted.
    """
    from flowlib import api
    from flowlib.cli.show_cmd import build_from_cli, compile_from_cli

    settings = config(db, executor)  # a bad flow.toml fails before the pipeline is imported
    if server is not None:  # submit + wait
        from flowlib.cli.remote import follow, require_client, submit_plan

        client = require_client(server)
        with _stdout_kept_for(True):
            _, dag = build_from_cli(file, workflow, params, params_file)
            plan = compile_from_cli(dag)
        follow(client, submit_plan(client, plan)["run_id"], as_json)
    with _stdout_kept_for(as_json):
        from executors.early import start_early

        start_early(file, settings)  # the workers' imports overlap with this process's
        wf, dag = build_from_cli(file, workflow, params, params_file)
        progress, given = Progress(len(dag.nodes)), dag.params
        plan = compile_from_cli(dag)
        del dag  # the plan is what runs: a big map's build is not kept alive through the run
        # This process is the command's: the plan and what the imports made live until it exits.
        # Frozen now, the cyclic collector's full passes while the run is recorded do not walk
        # them (two passes over a 10,000-node plan: ~40 ms); the run freezes again as it starts.
        gc.freeze()
        result = api.run(
            wf,
            params=given,
            executor=executor,
            db=db,  # the flag, not the resolved URL: errors name where it came from
            cache=not no_cache,
            fail_fast=fail_fast,
            max_parallel=max_parallel,
            progress=progress,
            on_recorded=progress.recorded,
            plan=plan,
        )
        progress.close(str(result.status), [str(node.status) for node in result.nodes])
    report(result, as_json)


DRY_RUN_ITEMS = 10  # map items listed one by one in a dry run's text before they are summarised


def print_plan(steps: list) -> None:
    """A resume plan as text: a line per node; the items of a long map summarised."""
    shown: dict[str, int] = {}
    skipped: dict[str, list] = {}
    for step in steps:
        if step.item_of is not None:
            shown[step.item_of] = shown.get(step.item_of, 0) + 1
            if shown[step.item_of] > DRY_RUN_ITEMS:
                skipped.setdefault(step.item_of, []).append(step)
                continue
        elif step.name in skipped:
            rest = skipped.pop(step.name)
            reuse = sum(1 for s in rest if s.action == "reuse")
            click.echo(
                f"       ... {len(rest)} more items of {step.name}: {reuse} reuse, {len(rest) - reuse} rerun"
            )
        click.echo(f"{step.action:<6} {step.name:<30} {'; '.join(step.reasons)}")


@click.command("resume")
@click.argument("run_id")
@click.option("--executor", default=None, help="Default executor for the rerun nodes.")
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (reuse or rerun, and why) without running anything."
)
@click.option(
    "--reuse-succeeded",
    is_flag=True,
    help="Keep nodes that succeeded before even when their code changed (you know the change does not affect them).",
)
@db_option
@server_option
@json_option
def resume(
    run_id: str,
    executor: str | None,
    dry_run: bool,
    reuse_succeeded: bool,
    db: str | None,
    server: str | None,
    as_json: bool,
) -> None:
    """Re-run a failed or interrupted run, reusing every node that succeeded.

    The DAG is rebuilt from the same file and parameters with the code as it is
    now: failed, never-run and interrupted nodes run again, and so does every
    node whose code or inputs changed, with everything downstream of it.
    RUN_ID may be `latest`.
    """
    settings = config(db, executor)
    from flowlib.cli.remote import client_for

    client = client_for(server)
    if client is not None:
        resume_on_server(client, run_id, reuse_succeeded, as_json, dry_run=dry_run)
        return
    if dry_run:
        from scheduler.resuming import plan_for

        with _stdout_kept_for(as_json):
            _, _, steps = plan_for(run_id, settings, reuse_succeeded=reuse_succeeded)
        if as_json:
            click.echo(json.dumps([step.to_json() for step in steps]))
        else:
            print_plan(steps)
        return
    from flowlib import api

    progress = Progress()
    with _stdout_kept_for(as_json):
        result = api.resume(
            run_id,
            executor=executor,
            db=db,  # the flag, not the resolved URL: errors name where it came from
            reuse_succeeded=reuse_succeeded,
            progress=progress,
            on_recorded=progress.recorded,
        )
        progress.close(str(result.status), [str(node.status) for node in result.nodes])
    if result.status == "succeeded" and all(node.cached for node in result.nodes):
        click.echo("nothing needed to run: every node was reused", err=True)
    report(result, as_json)


def resume_on_server(
    client: Any, run_id: str, reuse_succeeded: bool, as_json: bool, *, dry_run: bool = False
) -> None:
    """Resume a server's run with this folder's code as it is now (or, away from its project, the
    run's own code), and follow it; with `dry_run`, print what the resume would do instead."""
    from pathlib import Path
    from types import SimpleNamespace

    from flowlib.cli.remote import follow, upload_snapshot

    run = client.get(f"/api/runs/{run_id}")
    body: dict[str, Any] = {"reuse_succeeded": reuse_succeeded}
    plan = None
    if Path(run["file"]).is_file():
        from scheduler.resuming import rebuild

        with _stdout_kept_for(True):
            plan = rebuild(SimpleNamespace(file=run["file"], workflow=run["workflow"], params=run["params"]))
        body["plan"] = plan.to_json()
    if dry_run:
        steps = client.post(f"/api/runs/{run['run_id']}/resume/plan", body)
        if as_json:
            click.echo(
                json.dumps([{key: step[key] for key in ("name", "action", "reasons")} for step in steps])
            )
        else:
            from scheduler.engine.resume import Step

            print_plan([Step(**step) for step in steps])
        return
    if plan is not None:
        body["snapshot"] = upload_snapshot(client, Path(plan.project_root))
    follow(client, client.post(f"/api/runs/{run['run_id']}/resume", body)["run_id"], as_json)


COMMANDS = [run, resume]
