"""What the client commands share when they talk to a `flow server`: snapshots, following a run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from flowlib.client import Client, connect, server_url
from flowlib.errors import FlowError

FINAL = {"succeeded", "failed", "cancelled", "interrupted"}
SHOWN = ("succeeded", "cached", "failed", "upstream_failed")
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 130, "interrupted": 1}


def client_for(option: str | None, *, environment: bool = True) -> Client | None:
    url = server_url(option, environment=environment)
    return connect(url) if url else None


def require_client(option: str | None) -> Client:
    client = client_for(option)
    if client is None:
        raise FlowError("no server to talk to: give --server URL or set FLOW_SERVER")
    return client


def upload_snapshot(client: Client, root: Path) -> str:
    """Pack the project at `root` and upload it unless the server has it; return its digest."""
    from flowlib.config import load
    from scheduler.server.snapshots import digest_of, local_state, pack

    config = load()
    data = pack(root, float(config.server["max_code_mb"]), leave_out=local_state(config))
    digest = digest_of(data)
    if not client.exists(f"/api/snapshots/{digest}"):
        client.put_bytes(f"/api/snapshots/{digest}", data)
    return digest


def follow(client: Client, run_id: str, as_json: bool) -> None:
    """Print a run's progress until it ends, then its outcome, and exit with its code."""
    print(f"run {run_id} queued on {client.url}", file=sys.stderr, flush=True)
    seen: dict[str, str] = {}
    started = time.monotonic()
    while True:
        run = client.get(f"/api/runs/{run_id}")
        for node in run.get("nodes") or ():
            if node["status"] in SHOWN and seen.get(node["name"]) != node["status"]:
                print(f"  {node['status']:<15} {node['name']}", file=sys.stderr, flush=True)
            seen[node["name"]] = node["status"]
        if run["status"] in FINAL:
            break
        time.sleep(0.5)
    from collections import Counter

    from flowlib.cli.progress import summary

    counts = Counter(node["status"] for node in run.get("nodes") or ())
    elapsed = time.monotonic() - started
    print(f"run {run_id} {run['status']}: {summary(counts)}, in {elapsed:.2f}s", file=sys.stderr, flush=True)
    report(run, as_json)


def report(run: dict[str, Any], as_json: bool) -> None:
    """Print a finished run as `flow run` does, and exit with its code."""
    if as_json:
        click.echo(json.dumps(run, default=repr))
    elif run["status"] == "succeeded":
        click.echo(json.dumps(run.get("outputs"), default=repr))
    elif run.get("error"):
        click.echo(f"error: {run['error']}", err=True)
        for node in run.get("nodes") or ():
            error = node.get("error") or {}
            if node["status"] == "failed" and error.get("traceback"):
                click.echo(f"--- {node['name']} ---\n{error['traceback'].rstrip()}", err=True)
    sys.exit(EXIT_CODES.get(run["status"], 1))


def submitted(client: Client, run: dict[str, Any], wait: bool, as_json: bool) -> None:
    """What `flow submit` and `flow launch` print: the run id alone (or its JSON), or its outcome."""
    if wait:
        follow(client, run["run_id"], as_json)
    if as_json:
        click.echo(json.dumps(run, default=repr))
    else:
        click.echo(run["run_id"])


def submit_plan(client: Client, plan: Any, priority: int = 0) -> dict[str, Any]:
    """Upload a compiled plan's code and queue it."""
    snapshot = upload_snapshot(client, Path(plan.project_root))
    return client.post("/api/runs", {"plan": plan.to_json(), "snapshot": snapshot, "priority": priority})
