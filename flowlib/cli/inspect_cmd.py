"""Commands that read recorded runs: runs, status, logs, outputs, metrics, why, cancel."""

from __future__ import annotations

import json
from typing import Any

import click

from flowlib.cli.options import config, db_option, json_option
from flowlib.errors import FlowError


def _engine_and_store(db: str | None) -> tuple[Any, Any]:
    """The database engine and a reader of artifacts (store files and inline database rows)."""
    from scheduler.service import connect, open_store
    from scheduler.store.blobs import Blobs

    settings = config(db)
    engine = connect(settings)
    return engine, Blobs(engine).reader(open_store(settings))


@click.command("runs")
@click.option("--workflow", default=None, help="Only runs of this workflow.")
@click.option(
    "--status",
    default=None,
    type=click.Choice(["pending", "running", "succeeded", "failed", "cancelled"]),
    help="Only runs in this state.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most N runs, newest first."
)
@db_option
@json_option
def runs(workflow: str | None, status: str | None, limit: int, db: str | None, as_json: bool) -> None:
    """List recorded runs, newest first."""
    from scheduler.store import repository as repo
    from scheduler.store.readback import result_of

    engine, store = _engine_and_store(db)
    with engine.connect() as conn:
        found = repo.list_runs(conn, workflow=workflow, status=status, limit=limit)
    results = [(run, result_of(run, [], store, engine, with_nodes=False)) for run in found]
    if as_json:
        objects = []
        for run, result in results:
            shown = result.to_json(with_nodes=False)
            shown.update(created_at=run.created_at, ended_at=run.ended_at, file=run.file, params=run.params)
            objects.append(shown)
        click.echo(json.dumps(objects, default=repr))
        return
    for run, _ in results:
        click.echo(f"{run.id}  {run.status:<10} {run.workflow:<20} {run.file}")


@click.command("status")
@click.argument("run_id")
@db_option
@json_option
def status(run_id: str, db: str | None, as_json: bool) -> None:
    """Show a run's nodes: status, attempts, cache hits, durations, errors."""
    from scheduler.store.readback import load_run

    engine, store = _engine_and_store(db)
    result = load_run(engine, store, run_id)
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
@db_option
def logs(run_id: str, node: str | None, db: str | None) -> None:
    """Print what nodes printed (stdout, stderr, current.logger), by attempt."""
    from scheduler.store import repository as repo
    from scheduler.store.readback import RunNotFound

    engine, _ = _engine_and_store(db)
    with engine.connect() as conn:
        run = repo.find_run(conn, run_id)
        if run is None:
            raise RunNotFound(f"no run '{run_id}' in this database")
        attempts = repo.attempts_of(conn, run.id, node)
        if node is not None and not attempts and node not in repo.node_ids(conn, run.id):
            raise RunNotFound(f"run {run.id} has no node '{node}'")
    for attempt in attempts:
        click.echo(f"=== {attempt.node} (attempt {attempt.number}, {attempt.status}) ===")
        if attempt.log:
            click.echo(attempt.log.rstrip("\n"))


@click.command("outputs")
@click.argument("run_id")
@click.argument("node", required=False)
@db_option
@json_option
def outputs(run_id: str, node: str | None, db: str | None, as_json: bool) -> None:
    """Print a run's outputs, or one node's outputs by name."""
    from flowlib.results import jsonable
    from scheduler.store.readback import RunNotFound, load_run

    engine, store = _engine_and_store(db)
    result = load_run(engine, store, run_id)
    if node is None:
        value = result.outputs_json()
    else:
        from scheduler.store import repository as repo

        with engine.connect() as conn:
            rows = {row.name: row for row in repo.nodes_of(conn, result.run_id)}
        if node not in rows:
            raise RunNotFound(f"run {result.run_id} has no node '{node}'")
        from scheduler.store.readback import import_pipeline

        import_pipeline(_run_file(engine, result.run_id))
        try:
            value = {
                name: jsonable(store.get(ref["digest"])) for name, ref in (rows[node].outputs or {}).items()
            }
        except Exception as exc:
            raise FlowError(
                f"cannot load the outputs of node '{node}': {type(exc).__name__}: {exc}"
            ) from None
    click.echo(json.dumps(value, default=repr, indent=None if as_json else 2))


def _run_file(engine: Any, run_id: str) -> str:
    from scheduler.store import repository as repo

    with engine.connect() as conn:
        return repo.get_run(conn, run_id).file  # type: ignore[union-attr]


@click.command("metrics")
@click.argument("run_id")
@db_option
@json_option
def metrics(run_id: str, db: str | None, as_json: bool) -> None:
    """Print the metrics nodes logged with current.log_metric."""
    from scheduler.store import repository as repo
    from scheduler.store.readback import RunNotFound

    engine, _ = _engine_and_store(db)
    with engine.connect() as conn:
        run = repo.find_run(conn, run_id)
        if run is None:
            raise RunNotFound(f"no run '{run_id}' in this database")
        rows = [
            {
                "node": m.node,
                "attempt": m.attempt,
                "name": m.name,
                "value": m.value,
                "step": m.step,
                "time": m.time,
            }
            for m in repo.metrics_of(conn, run.id)
        ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        step = "" if row["step"] is None else f" step={row['step']}"
        click.echo(f"{row['node']:<30} {row['name']}={row['value']:g}{step}")


@click.command("why")
@click.argument("run_id")
@click.argument("node")
@db_option
@json_option
def why(run_id: str, node: str, db: str | None, as_json: bool) -> None:
    """Explain why NODE of RUN_ID hit or missed the cache: which part of its key differs."""
    from scheduler.store.why import explain

    engine, _ = _engine_and_store(db)
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
    """Cancel a running run: its running nodes are stopped and it ends `cancelled`.

    A live scheduler sees the request within a couple of seconds (its `flow run`
    then exits 130); a run whose scheduler is gone is marked cancelled at once.
    """
    from scheduler.resume import scheduler_alive
    from scheduler.store import repository as repo
    from scheduler.store.readback import RunNotFound

    engine, _ = _engine_and_store(db)
    with engine.begin() as conn:
        run = repo.find_run(conn, run_id)
        if run is None:
            raise RunNotFound(f"no run '{run_id}' in this database")
        found, status = run.id, run.status
        if status not in ("running", "pending"):
            click.echo(f"run {found} is already {status}", err=True)
            return
        if scheduler_alive(run):
            repo.update_run(conn, found, cancel_requested=True)
            click.echo(f"cancel requested for run {found}", err=True)
            return
        repo.cancel_dead_run(conn, found, "cancelled by `flow cancel` (its scheduler was gone)")
    click.echo(f"run {found} cancelled (its scheduler was gone)", err=True)


COMMANDS = [runs, status, logs, outputs, metrics, why, cancel]
