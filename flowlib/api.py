"""The Python entry points: run, resume and read runs (they reach the scheduler lazily)."""

from __future__ import annotations

from typing import Any

from flowlib.config import Config, load
from flowlib.errors import FlowError
from flowlib.results import RunResult
from flowlib.workflows import Workflow


def _config(db: str | None, executor: str | None = None) -> Config:
    return load(db=db, executor=executor)


def run(
    wf: Workflow,
    params: dict[str, Any] | None = None,
    executor: str | None = None,
    db: str | None = None,
    cache: bool = True,
    *,
    fail_fast: bool = False,
    max_parallel: int | None = None,
    progress: Any = None,
    on_recorded: Any = None,
    dag: Any = None,
    plan: Any = None,
) -> RunResult:
    """Build `wf` with `params`, run it to the end and return its RunResult (never raises RunFailed).

    `dag` (built already) or `plan` (compiled already) save doing that again."""

    if not isinstance(wf, Workflow):
        raise FlowError(f"flowlib.run takes a @workflow, got {wf!r}")
    config = _config(db, executor)
    if plan is None:
        from flowlib.compile import compile_dag

        plan = compile_dag(dag or wf.build(**(params or {})))
    dag = None  # not kept alive through the run
    from scheduler.runs import RunOptions, executor_names, start_executors

    # the workers start while this process imports SQLAlchemy and opens the database
    executors = start_executors(executor_names(plan, executor or config.executor), config)
    from scheduler.runs import execute_here, open_store

    options = RunOptions(
        executor=executor,
        use_cache=cache,
        fail_fast=fail_fast,
        max_parallel=max_parallel,
        progress=progress,
        on_recorded=on_recorded,
    )
    run_id, blobs = execute_here(plan, config, options, executors=executors)
    return get_run(run_id, db=db, _config=config, _store=open_store(config), _blobs=blobs)


def resume(
    run_id: str,
    executor: str | None = None,
    db: str | None = None,
    *,
    reuse_succeeded: bool = False,
    progress: Any = None,
    on_recorded: Any = None,
) -> RunResult:
    """Re-run a failed or interrupted run, reusing what succeeded; returns the new run's result.

    With `reuse_succeeded`, nodes that succeeded before are kept even when their code changed.
    """
    from scheduler.resuming import resume_here

    config = _config(db, executor)
    new_id = resume_here(
        run_id,
        config,
        executor=executor,
        reuse_succeeded=reuse_succeeded,
        progress=progress,
        on_recorded=on_recorded,
    )
    return get_run(new_id, db=db, _config=config)


def get_run(
    run_id: str,
    db: str | None = None,
    *,
    _config: Config | None = None,
    _store: Any = None,
    _blobs: Any = None,
) -> RunResult:
    """Return a recorded run; its outputs (and every node's, through `RunResult.node_outputs`)
    load from the artifact store on first use."""
    from scheduler.runs import connect, open_store
    from scheduler.store.blobs import Blobs
    from scheduler.store.readback import load_run

    config = _config or load(db=db)
    engine = connect(config)
    blobs = _blobs if _blobs is not None else Blobs(engine)
    return load_run(engine, blobs.reader(_store or open_store(config)), str(run_id))
