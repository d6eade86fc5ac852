"""flowlib: typed ML pipelines as DAGs, persisted, cached by content, resumable."""

from flowlib.context import current as current
from flowlib.errors import ConfigError as ConfigError
from flowlib.errors import FlowError as FlowError
from flowlib.errors import FlowTypeError as FlowTypeError
from flowlib.errors import OperatorReturnTypeError as OperatorReturnTypeError
from flowlib.errors import RunFailed as RunFailed
from flowlib.errors import WorkflowDefinitionError as WorkflowDefinitionError
from flowlib.files import File as File
from flowlib.operators import Operator as Operator
from flowlib.operators import operator as operator
from flowlib.resources import Distributed as Distributed
from flowlib.resources import Resources as Resources
from flowlib.sweep import sweep as sweep
from flowlib.workflows import Workflow as Workflow
from flowlib.workflows import workflow as workflow

__version__ = "0.1.0"


def run(wf, params=None, executor=None, db=None, cache=True):  # type: ignore[no-untyped-def]
    """Run workflow `wf` with `params` and return its RunResult (see flowlib.api.run)."""
    from flowlib.api import run as _run

    return _run(wf, params=params, executor=executor, db=db, cache=cache)


def resume(run_id, executor=None, db=None):  # type: ignore[no-untyped-def]
    """Resume a failed or interrupted run and return the new RunResult (see flowlib.api.resume)."""
    from flowlib.api import resume as _resume

    return _resume(run_id, executor=executor, db=db)


def get_run(run_id, db=None):  # type: ignore[no-untyped-def]
    """Return the RunResult of a recorded run; outputs load lazily from the store."""
    from flowlib.api import get_run as _get_run

    return _get_run(run_id, db=db)


__all__ = [
    "ConfigError",
    "Distributed",
    "File",
    "FlowError",
    "FlowTypeError",
    "Operator",
    "OperatorReturnTypeError",
    "Resources",
    "RunFailed",
    "Workflow",
    "WorkflowDefinitionError",
    "current",
    "get_run",
    "operator",
    "resume",
    "run",
    "sweep",
    "workflow",
]
