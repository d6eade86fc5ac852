"""Commands that read recorded runs: status, logs, outputs, metrics, why, cancel.

None of them imports the user's pipeline, unless `flow outputs` shows a value that needs
the pipeline's classes to load.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from flowlib.cli.options import config, db_option, json_option


def open_db(db: str | None) -> tuple[Any, Any]:
    """The database engine and a reader of artifacts (store files and inline database rows)."""
    from scheduler.runs import connect, open_store
    from scheduler.store.blobs import Blobs

    settings = config(db)
    engine = connect(settings)
    return engine, Blobs(engine).reader(open_store(settings))


@click.command("status")
@click.argument("run_id")
@db_option
@json_option
def status(run_id: str, db: str | None, as_json: bool) -> None:
    """Show a run's nodes: status, attempts, cache hits, durations, errors (RUN_ID may be `latest`)."""
    from scheduler.store.readback import load_run

    engine, reader = open_db(db)
    result = load_run(engine, reader, run_id, classes=False)
    if as_json:
        click.echo(json.dumps(result.to_json(), default=repr))
        return
    click.echo(f"run {result.run_id}  workflow {result.workflow}  {result.status}")
    if result.resumed_from:
        click.echo(f"resumed from {result.resumed_from}")
    for node in result.nodes:
        duration = f"{node.duration_s:.2f}s" if node.duration_s is not None else "-"
        error = (
            f"  {node.error.get('type')}: {node.error.get('message')}" if isinstance(node.error, dict) else ""
        )
        click.echo(f"  {node.name:<30} {node.status!s:<16} attempts={node.attempts} {duration}{error}")


@click.command("logs")
@click.argument("run_id")
@click.argument("node", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing NODE's log while it runs, until it ends.")
@db_option
def logs(run_id: str, node: str | None, follow: bool, db: str | None) -> None:
    """Print what nodes printed (stdout, stderr, current.logger, logging), by attempt.

    A node that came from the cache shows the log of the run that computed it.
    """
    from scheduler.store import repository as repo
    from scheduler.store.logs import node_logs

    engine, _ = open_db(db)
    with engine.connect() as conn:
        run = repo.require_run(conn, run_id)
        if node is not None:
            repo.require_node(conn, run, node)
        found = node_logs(conn, run, node)
    if follow:
        if node is None:
            raise click.UsageError("--follow needs a NODE")
        _follow(engine, run, node)
        return
    for log in found:
        _print_attempt(log)


def _print_attempt(log: Any) -> None:
    origin = f", from {log.origin}" if log.origin else ""
    click.echo(f"=== {log.node} (attempt {log.number}, {log.status}{origin}) ===")
    if log.text:
        click.echo(log.text.rstrip("\n"))


def _follow(engine: Any, run: Any, node: str) -> None:
    """Print a node's log as it grows, until the node has ended."""
    from sqlalchemy import select

    from flowlib.results import FINAL
    from scheduler.store import repository as repo
    from scheduler.store.models import nodes
    from scheduler.store.readback import shown_status

    printed: dict[int, int] = {}  # attempt -> characters printed
    while True:
        with engine.connect() as conn:
            current = repo.require_run(conn, run.id)
            state = conn.scalar(select(nodes.c.status).where(nodes.c.run_id == run.id, nodes.c.name == node))
            chunks = repo.log_of(conn, run.id, node)
            finished = {a.number: a.log or "" for a in repo.attempts_of(conn, run.id, node)}
        texts: dict[int, str] = {}
        for chunk in chunks:
            texts[chunk.attempt] = texts.get(chunk.attempt, "") + chunk.text
        for number, rest in finished.items():
            texts[number] = texts.get(number, "") + rest
        for number in sorted(texts):
            new = texts[number][printed.get(number, 0) :]
            if new:
                click.echo(new, nl=False)
                printed[number] = len(texts[number])
        ended = state in FINAL or shown_status(current) not in ("running", "pending", "queued")
        if ended and (state not in ("succeeded", "failed") or finished):
            return
        time.sleep(0.5)


@click.command("outputs")
@click.argument("run_id")
@click.argument("node", required=False)
@click.option(
    "--path", "show_path", is_flag=True, help="Print where each artifact is (a file path, or the database)."
)
@db_option
@json_option
def outputs(run_id: str, node: str | None, show_path: bool, db: str | None, as_json: bool) -> None:
    """Print a run's outputs, or one node's outputs by name (RUN_ID may be `latest`).

    With --path, print each output's artifact file instead: `numpy.load`, `torch.load`,
    `json.load` and `pickle.load` open them as their own files.
    """
    from flowlib.errors import FlowError
    from flowlib.results import jsonable
    from scheduler.store import repository as repo
    from scheduler.store.readback import Values, load_run

    engine, reader = open_db(db)
    if show_path:
        _print_paths(engine, reader, run_id, node, as_json)
        return
    if node is None:
        value = load_run(engine, reader, run_id, with_nodes=False, classes=False).outputs_json()
    else:
        with engine.connect() as conn:
            run = repo.require_run(conn, run_id)
            row = repo.require_node(conn, run, node)
        values = Values(reader, run.file, classes=False)
        try:
            value = {name: jsonable(values.get(ref)) for name, ref in (row.outputs or {}).items()}
        except Exception as exc:
            raise FlowError(
                f"cannot load the outputs of node '{node}': {type(exc).__name__}: {exc}"
            ) from None
    click.echo(json.dumps(value, default=repr, indent=None if as_json else 2))


def _print_paths(engine: Any, reader: Any, run_id: str, node: str | None, as_json: bool) -> None:
    from flowlib.artifacts import may_be_inline
    from scheduler.store import repository as repo
    from scheduler.store.readback import _named_nodes

    with engine.connect() as conn:
        run = repo.require_run(conn, run_id)
        names = [node] if node is not None else sorted(_named_nodes(run.outputs or {}))
        rows = {name: repo.require_node(conn, run, name).outputs or {} for name in names}
    store = reader.store
    shown = []
    for name, refs in rows.items():
        for output, ref in refs.items():
            label = output if node is not None else f"{name}.{output}" if output != "return" else name
            inline = may_be_inline(ref) and reader.inline.get(ref["digest"]) is not None
            where = None if inline else store.path_for(ref["digest"])
            shown.append(
                {"output": label, "path": where, "serializer": ref["serializer"], "digest": ref["digest"]}
            )
    if as_json:
        click.echo(json.dumps(shown))
        return
    for item in shown:
        click.echo(f"{item['output']}\t{item['path'] or '(in the database)'}")


@click.command("metrics")
@click.argument("run_id")
@db_option
@json_option
def metrics(run_id: str, db: str | None, as_json: bool) -> None:
    """Print the metrics nodes logged with current.log_metric (a cached node's: those of the run
    that computed it, marked)."""
    from scheduler.store import repository as repo
    from scheduler.store.logs import node_metrics

    engine, _ = open_db(db)
    with engine.connect() as conn:
        rows = node_metrics(conn, repo.require_run(conn, run_id))
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        step = "" if row["step"] is None else f" step={row['step']}"
        origin = f"  (from run {row['from_run']})" if row.get("from_run") else ""
        click.echo(f"{row['node']:<30} {row['name']}={row['value']:g}{step}{origin}")


@click.command("why")
@click.argument("run_id")
@click.argument("node")
@db_option
@json_option
def why(run_id: str, node: str, db: str | None, as_json: bool) -> None:
    """Explain why NODE of RUN_ID hit or missed the cache: which part of its key differs."""
    from scheduler.store.why import explain

    engine, _ = open_db(db)
    answer = explain(engine, run_id, node)
    if as_json:
        click.echo(json.dumps(answer))
    else:
        click.echo(answer["summary"])
        for reason in answer["differences"]:
            click.echo(f"  - {reason}")


@click.command("cancel")
@click.argument("run_id")
@db_option
def cancel(run_id: str, db: str | None) -> None:
    """Cancel a queued or running run: its running nodes are stopped and it ends `cancelled`.

    A live scheduler sees the request within a couple of seconds (its `flow run`
    then exits 130); a run whose scheduler is gone, or that no server claimed yet,
    is marked cancelled at once.
    """
    from scheduler.store import repository as repo
    from scheduler.store.readback import scheduler_alive

    engine, _ = open_db(db)
    with engine.begin() as conn:
        run = repo.require_run(conn, run_id)
        found, state = run.id, run.status
        if state not in ("running", "pending", "queued"):
            click.echo(f"run {found} is already {state}", err=True)
            return
        if state != "queued" and scheduler_alive(run):
            repo.update_run(conn, found, cancel_requested=True)
            click.echo(f"cancel requested for run {found}", err=True)
            return
        why = (
            "cancelled by `flow cancel` before it started"
            if state == "queued"
            else "cancelled by `flow cancel` (its scheduler was gone)"
        )
        repo.cancel_dead_run(conn, found, why)
    gone = "it never started" if state == "queued" else "its scheduler was gone"
    click.echo(f"run {found} cancelled ({gone})", err=True)


COMMANDS = [status, logs, outputs, metrics, why, cancel]
