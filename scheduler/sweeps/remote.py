"""A sweep whose trials are submitted to a `flow server` pool (`flow sweep --server URL`).

The loop runs here, as for a local sweep, and compiles each trial here (as `flow submit` does:
the server never imports the pipeline). The study is kept by the server (`RemoteBook` asks it
for trials and tells it how they ended); each trial is a run queued on the pool
(`RemoteLauncher`), which this process follows over the API.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowlib.client import Client
from flowlib.plan import Plan
from scheduler.sweeps import catalog
from scheduler.sweeps.book import Asked
from scheduler.sweeps.launch import FINAL_STATES, Ended, Point
from scheduler.sweeps.trials import TrialPlans, pick_objective, shared_nodes

POLL_S = 0.5  # how often the trials' runs are looked at
ADOPT_WAIT_S = 60.0  # a run reading `interrupted` this long is taken as ended (no server adopted it)
ENDED = ("succeeded", "failed", "cancelled")
LIVE = ("queued", "pending", "running")


def _quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class RemoteBook:
    """The sweep's study, kept by the server."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.path = f"/api/sweeps/{_quoted(name)}"

    def _trials(self) -> list[dict[str, Any]]:
        return self.client.get(self.path)["trials"]

    def count(self) -> int:
        return len(self._trials())

    def points_tried(self) -> int:
        return len({tuple(sorted(t["params"].items())) for t in self._trials() if t["params"]})

    def ask(self) -> Asked:
        asked = self.client.post(f"{self.path}/trials")
        return Asked(asked["number"], asked["params"])

    def unfinished(self) -> list[Asked]:
        return [Asked(t["number"], t["params"]) for t in self._trials() if t["state"] == "running"]

    def report(self, number: int, points: Iterable[tuple[int, float]]) -> bool:
        sent = [[step, value] for step, value in points if math.isfinite(value)]
        if not sent:
            return False
        return bool(self.client.post(f"{self.path}/trials/{number}/steps", {"points": sent})["prune"])

    def complete(self, number: int, value: float) -> None:
        self._outcome(number, {"state": "complete", "value": value})

    def fail(self, number: int, error: str) -> None:
        self._outcome(number, {"state": "failed", "error": error[:20_000]})

    def prune(self, number: int) -> None:
        self._outcome(number, {"state": "pruned"})

    def _outcome(self, number: int, body: dict[str, Any]) -> None:
        from flowlib.client import ServerRefused

        try:
            self.client.post(f"{self.path}/trials/{number}/outcome", body)
        except ServerRefused as exc:
            if exc.status != 409:  # 409: it ended already (told by another `flow sweep`): nothing lost
                raise


@dataclass
class Watched:
    """A trial's run this process follows."""

    steps: set[int]
    interrupted_since: float | None = None


class RemoteLauncher:
    """Trials are runs queued on the server's pool; `wait` polls them (and, with `watch`, the
    steps of that metric they log, for the pruner)."""

    def __init__(self, client: Client, snapshot: str, sweep: str, *, watch: str | None = None) -> None:
        """`snapshot`: the digest of the project's code, uploaded once (every trial runs it)."""
        self.client, self.snapshot, self.sweep, self.watch = client, snapshot, sweep, watch
        self.watching: dict[str, Watched] = {}

    def launch(self, plan: Plan, *, sweep: str, trial: int) -> str:
        body = {"plan": plan.to_json(), "snapshot": self.snapshot}
        run = self.client.post(f"/api/sweeps/{_quoted(sweep)}/trials/{trial}/runs", body)
        self.watching[run["run_id"]] = Watched(set())
        return run["run_id"]

    def resume(self, run_id: str, *, sweep: str, trial: int) -> str:
        """A trial's run that goes on (a server adopted it) is followed again; one that ended
        unfinished is resumed on the pool with its own code."""
        run = self.client.get(f"/api/runs/{run_id}")
        if run["status"] not in LIVE:
            run = self.client.post(f"/api/runs/{run_id}/resume", {})
        self.watching[run["run_id"]] = Watched(set())
        return run["run_id"]

    def cancel(self, run_id: str, why: str) -> None:
        self.client.post(f"/api/runs/{run_id}/cancel")

    def wait(self, timeout: float) -> list[Ended | Point]:
        deadline = time.monotonic() + timeout
        while True:
            found = self._look()
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            time.sleep(min(POLL_S, left))

    def _look(self) -> list[Ended | Point]:
        found: list[Ended | Point] = []
        if not self.watching:
            return found
        # the sweep's runs in one request, without their nodes (a trial may have thousands)
        listed = {run["run_id"]: run for run in self.client.get("/api/runs", sweep=self.sweep, limit=1000)}
        for run_id, watched in list(self.watching.items()):
            run = listed.get(run_id) or self.client.get(f"/api/runs/{run_id}")
            if self.watch is not None:
                found.extend(self._steps(run_id, watched))
            status = run["status"]
            if status == "interrupted":  # its server died: another adopts it after the lease
                watched.interrupted_since = watched.interrupted_since or time.monotonic()
                if time.monotonic() - watched.interrupted_since < ADOPT_WAIT_S:
                    continue
            elif status not in ENDED:
                watched.interrupted_since = None
                continue
            del self.watching[run_id]
            found.append(Ended(run_id, status, run.get("error")))
        return found

    def _steps(self, run_id: str, watched: Watched) -> list[Point]:
        metrics = self.client.get(f"/api/runs/{run_id}/metrics", name=self.watch)
        points = []
        for metric in metrics:
            step, value = metric.get("step"), metric.get("value")
            if step is not None and value is not None and step not in watched.steps:  # null: not finite
                watched.steps.add(step)
                points.append(Point(run_id, int(step), float(value)))
        return points

    def trial_runs(self, sweep: str) -> dict[int, catalog.TrialRun]:
        runs = self.client.get("/api/runs", sweep=sweep, limit=1000)
        newest: dict[int, catalog.TrialRun] = {}
        for run in reversed(runs):  # oldest first: a trial's newest run is its last
            if run.get("trial") is not None:
                newest[run["trial"]] = catalog.TrialRun(
                    run["run_id"], run["status"], None, None, run.get("started_at"), run.get("ended_at")
                )
        return newest

    def settled(self, run_id: str, names: Collection[str]) -> bool:
        statuses = {n["name"]: n["status"] for n in self.client.get(f"/api/runs/{run_id}")["nodes"] or ()}
        return all(statuses.get(name) in FINAL_STATES for name in names)

    def objective(self, run_id: str, key: str) -> float:
        run = self.client.get(f"/api/runs/{run_id}")
        return pick_objective(
            run.get("outputs"), lambda: self.client.get(f"/api/runs/{run_id}/metrics", name=key), key
        )

    def close(self) -> None:
        """Nothing to stop here: runs still going go on on the pool."""


def start_remote_sweep(
    wf: Any, request: Any, client: Client, *, report: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """`flow sweep --server`: record the sweep with the server (or continue the one of that name)
    and run its trials on the pool; return its status (the server's `flow sweep status --json`)."""
    from optuna.distributions import distribution_to_json

    from flowlib.cli.remote import upload_snapshot
    from flowlib.compile import relative_to_root
    from flowlib.fingerprint import find_project_root
    from scheduler.sweeps.space import grid_space, parse_space
    from scheduler.sweeps.start import check_request, settings_for

    check_request(request)
    dims = parse_space(wf, request.space, request.params)
    plans = TrialPlans(wf, request.params)
    probes = plans.probes(dims)  # the sweep is checked here before the server records anything
    settings = settings_for(request, dims)
    root = find_project_root(wf.file)
    body = {
        "name": request.name or wf.name,
        "workflow": wf.name,
        "file": relative_to_root(wf.file, root),
        "objective": request.objective,
        "direction": request.direction,
        "distributions": {name: distribution_to_json(dim.distribution()) for name, dim in dims.items()},
        "grid": grid_space(dims) if request.sampler == "grid" else None,
        **{key: settings[key] for key in SENT},
    }
    snapshot = upload_snapshot(client, root)  # too big a project is exit 2 before anything is recorded
    client.post("/api/sweeps", body)
    return _drive(client, body["name"], body["objective"], settings, plans, probes, snapshot, dims, report)


def resume_remote_sweep(
    name: str, client: Client, *, report: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """`flow sweep resume NAME --server`, from the project folder: the trials a killed sweep left
    are followed again (their runs go on on the pool) or resumed, then new ones up to its count."""
    from flowlib.cli.remote import upload_snapshot
    from flowlib.errors import FlowError
    from flowlib.fingerprint import find_project_root
    from flowlib.loading import select_workflow
    from flowlib.params import parse_params
    from scheduler.sweeps.space import parse_space

    record = client.get(f"/api/sweeps/{_quoted(name)}/record")
    settings = record["settings"]
    if "distributions" not in settings:
        raise FlowError(f"sweep '{name}' ran where `flow sweep` ran it: resume it there, without --server")
    project = find_project_root(Path.cwd()).resolve()
    file = (project / record["file"]).resolve()
    if not file.is_relative_to(project) or not file.is_file():
        raise FlowError(
            f"sweep '{name}' tunes {record['file']}, which is not in this project: "
            "run `flow sweep resume` from the folder it was started in"
        )
    wf = select_workflow(str(file), record["workflow"])
    fixed = parse_params(wf, {}, settings.get("params") or {})
    dims = parse_space(wf, settings["space"], fixed)
    plans = TrialPlans(wf, fixed)
    probes = plans.probes(dims)
    snapshot = upload_snapshot(client, find_project_root(wf.file))
    return _drive(client, name, record["objective"], settings, plans, probes, snapshot, dims, report)


SENT = ("space", "params", "trials", "parallel", "sampler", "pruner", "seed", "executor")


def _drive(
    client: Client,
    name: str,
    objective: str,
    settings: dict[str, Any],
    plans: TrialPlans,
    probes: tuple[Plan, Plan],
    snapshot: str,
    dims: Any,
    report: Callable[[str], None] | None,
) -> dict[str, Any]:
    from scheduler.sweeps.loop import SweepLoop
    from scheduler.sweeps.space import grid_size

    pruning = settings["pruner"] != "none"
    launcher = RemoteLauncher(client, snapshot, name, watch=objective if pruning else None)
    SweepLoop(
        name=name,
        book=RemoteBook(client, name),
        plans=plans,
        objective=objective,
        trials=settings["trials"],
        parallel=settings["parallel"],
        launcher=launcher,
        shared=shared_nodes(*probes),
        pruning=pruning,
        grid_points=grid_size(dims) if settings["sampler"] == "grid" else None,
        report=report or (lambda line: None),
    ).run()
    return client.get(f"/api/sweeps/{_quoted(name)}")
