"""`flowlib.sweep`: tune a workflow's parameters with Optuna, as `flow sweep` does (the scheduler and
Optuna are imported when it is called, not with flowlib)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flowlib.errors import FlowError
from flowlib.workflows import Workflow


def sweep(
    workflow: Workflow,
    space: Mapping[str, str | Sequence[Any]],
    objective: str,
    *,
    trials: int = 20,
    direction: str = "minimize",
    parallel: int = 1,
    sampler: str = "tpe",
    pruner: str = "none",
    seed: int | None = None,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    executor: str | None = None,
    db: str | None = None,
    server: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a sweep of `workflow` (or continue the one named `name`) and return its status:
    `{"name", "objective", "direction", "trials": [...], "best"}`, as `flow sweep status --json`.

    `space` maps a parameter to a SPEC (`"loguniform(1e-4,1e-1)"`, `"int(16,128)"`,
    `"choice(a,b)"`) or to a list of choices; `params` fixes other parameters; `progress` gets a
    line per trial event. A run of each trial is recorded, linked to the sweep; steps that do not
    depend on a tuned parameter run once for the whole sweep. Failed trials do not stop it; check
    `best` (None when no trial completed). With `server` (a URL; FLOW_SERVER is not read here),
    the trials are submitted to that server's pool and the study is kept there.
    """
    if not isinstance(workflow, Workflow):
        raise FlowError(f"flowlib.sweep takes a @workflow, got {workflow!r}")
    from flowlib.config import load
    from flowlib.params import parse_params
    from scheduler.sweeps.start import SweepRequest, start_sweep

    request = SweepRequest(
        objective=objective,
        space=dict(space),
        direction=direction,
        trials=trials,
        parallel=parallel,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        name=name,
        params=parse_params(workflow, {}, dict(params or {})),
        executor=executor,
    )
    if server is not None:
        if db is not None:
            raise FlowError("flowlib.sweep: give db or server, not both")
        from flowlib.client import connect
        from scheduler.sweeps.remote import start_remote_sweep

        return start_remote_sweep(workflow, request, connect(server), report=progress)
    return start_sweep(workflow, request, load(db=db, executor=executor), report=progress)
