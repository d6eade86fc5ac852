"""`flow submit`, `flow deploy`, `flow deployments`, `flow launch`: runs and workflows on a server."""

from __future__ import annotations

import inspect
import json
from typing import Any

import click

from flowlib.cli.options import json_option, params_options, server_option


@click.command("submit")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("workflow", required=False)
@params_options
@click.option("--priority", type=int, default=0, show_default=True, help="Higher is claimed first.")
@click.option("--wait", is_flag=True, help="Follow the run and exit with its exit code.")
@server_option
@json_option
def submit(
    file: str,
    workflow: str | None,
    params: tuple[str, ...],
    params_file: str | None,
    priority: int,
    wait: bool,
    server: str | None,
    as_json: bool,
) -> None:
    """Queue a run of WORKFLOW from FILE on a server; print its run id.

    The workflow is compiled here and the project's code goes with it as a snapshot
    (what .gitignore ignores, .flow/, virtualenvs and __pycache__ left out): the server
    runs exactly that code. With --wait, follow it and exit as `flow run` would.
    """
    from flowlib.cli.remote import require_client, submit_plan, submitted
    from flowlib.cli.run_cmd import _stdout_kept_for
    from flowlib.cli.show_cmd import build_from_cli, compile_from_cli

    client = require_client(server)
    with _stdout_kept_for(True):  # what the pipeline prints while it is compiled is not the answer
        _, dag = build_from_cli(file, workflow, params, params_file)
        plan = compile_from_cli(dag)
    submitted(client, submit_plan(client, plan, priority), wait, as_json)


def parameter_types(wf: Any) -> list[dict[str, Any]]:
    """A workflow's typed parameters: name, annotation, default (what a launch form is made of)."""
    from flowlib import typecheck
    from flowlib.results import jsonable

    shown = []
    for name, param in wf.parameters().items():
        hint = wf.hints.get(name, Any)
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        shown.append(
            {
                "name": name,
                "type": typecheck.describe(hint),
                "default": str(default) if hasattr(default, "__fspath__") else jsonable(default),
                "required": required,
            }
        )
    return shown


@click.command("deploy")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.argument("workflow", required=False)
@click.option("--name", default=None, help="The deployment's name (default: the workflow's).")
@click.option(
    "--schedule", default=None, metavar="CRON", help="Run it on this five-field cron schedule (UTC)."
)
@click.option(
    "--delete", "delete_name", default=None, metavar="NAME", help="Delete the deployment NAME instead."
)
@params_options
@server_option
def deploy(
    file: str | None,
    workflow: str | None,
    name: str | None,
    schedule: str | None,
    delete_name: str | None,
    params: tuple[str, ...],
    params_file: str | None,
    server: str | None,
) -> None:
    """Register WORKFLOW of FILE with a server as a deployment; print its new version (1, 2, ...).

    It keeps a snapshot of the project's code and the workflow's typed parameters (a launch
    form is made from them). -p values are fixed for its schedule and defaults for launches.
    """
    from flowlib.cli.remote import require_client, upload_snapshot
    from flowlib.compile import jsonable_params, relative_to_root
    from flowlib.errors import FlowError
    from flowlib.fingerprint import find_project_root
    from flowlib.loading import select_workflow
    from flowlib.params import parse_params, read_params_file, split_assignments

    client = require_client(server)
    if delete_name is not None:
        client.delete(f"/api/deployments/{delete_name}")
        click.echo(f"deployment {delete_name} deleted", err=True)
        return
    if file is None:
        raise FlowError("flow deploy needs a FILE (or --delete NAME)")
    if schedule is not None:
        from scheduler.server.deployments import check_schedule

        check_schedule(schedule)
    wf = select_workflow(file, workflow)
    fixed = parse_params(
        wf, split_assignments(params), read_params_file(params_file) if params_file else None
    )
    root = find_project_root(wf.file)
    body = {
        "name": name or wf.name,
        "workflow": wf.name,
        "file": relative_to_root(wf.file, root),
        "snapshot": upload_snapshot(client, root),
        "parameters": parameter_types(wf),
        "params": jsonable_params(fixed),
        "schedule": schedule,
    }
    answer = client.post("/api/deployments", body)
    click.echo(answer["version"])


@click.command("deployments")
@server_option
@json_option
def deployments(server: str | None, as_json: bool) -> None:
    """List a server's deployments (the latest version of each)."""
    from flowlib.cli.remote import require_client

    found = require_client(server).get("/api/deployments")
    if as_json:
        click.echo(json.dumps(found))
        return
    for item in found:
        params = ", ".join(f"{p['name']}: {p['type']}" for p in item["params"])
        schedule = f"  schedule {item['schedule']}" if item["schedule"] else ""
        click.echo(f"{item['name']:<24} v{item['version']:<4} {item['workflow']}({params}){schedule}")


@click.command("launch")
@click.argument("name")
@params_options
@click.option("--wait", is_flag=True, help="Follow the run and exit with its exit code.")
@server_option
@json_option
def launch(
    name: str, params: tuple[str, ...], params_file: str | None, wait: bool, server: str | None, as_json: bool
) -> None:
    """Queue a run of the latest version of deployment NAME; print its run id.

    Parameters are parsed by the workflow's annotations, as for `flow run`.
    """
    from flowlib.cli.remote import require_client, submitted
    from flowlib.params import read_params_file, split_assignments

    raw = {
        k: json.dumps(v) if not isinstance(v, str) else v
        for k, v in (read_params_file(params_file) if params_file else {}).items()
    }
    raw.update(split_assignments(params))
    client = require_client(server)
    submitted(client, client.post(f"/api/deployments/{name}/launch", {"params": raw}), wait, as_json)


COMMANDS = [submit, deploy, deployments, launch]
