"""`@workflow`: compose operators into a DAG; build it, or call it to run it."""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from flowlib import typecheck
from flowlib.dag import DAG, Builder, active_builder, call_site, output_spec, reset_builder, set_builder
from flowlib.errors import FlowTypeError, ParameterError, RunFailed, WorkflowDefinitionError
from flowlib.futures import Future

P = ParamSpec("P")
R = TypeVar("R")


class Workflow(Generic[P, R]):
    """A decorated workflow function."""

    __flow_workflow__ = True

    def __init__(self, fn: Callable[P, R]) -> None:
        self.fn = fn
        self.name: str = fn.__name__
        self.qualname: str = fn.__qualname__
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        for param in self.signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise WorkflowDefinitionError(
                    f"{call_site(fn.__code__.co_filename, fn.__code__.co_firstlineno)}: workflow '{self.name}', "
                    f"parameter '{param.name}': *args and **kwargs cannot be workflow parameters"
                )

    @functools.cached_property
    def hints(self) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self.fn)
        except Exception as exc:
            raise WorkflowDefinitionError(
                f"workflow '{self.name}': cannot resolve its annotations: {exc}"
            ) from None

    @property
    def file(self) -> str:
        return self.fn.__code__.co_filename

    def parameters(self) -> dict[str, inspect.Parameter]:
        return dict(self.signature.parameters)

    def build(self, **params: Any) -> DAG:
        """Return the DAG for these parameters without running anything."""
        arguments = self._bind_params(params)
        dag = DAG(workflow=self.name, file=self.file, params=arguments)
        builder = Builder(dag, self.name)
        token = set_builder(builder)
        try:
            dag.outputs = output_spec(self.fn(**arguments))
        finally:
            reset_builder(token)
        return dag

    def _bind_params(self, params: dict[str, Any]) -> dict[str, Any]:
        valid = list(self.signature.parameters)
        listed = ", ".join(valid) or "none"
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ParameterError(
                f"workflow '{self.name}': unknown parameter(s) {', '.join(unknown)}; valid parameters: {listed}"
            )
        missing = [
            name
            for name, param in self.signature.parameters.items()
            if param.default is inspect.Parameter.empty and name not in params
        ]
        if missing:
            raise ParameterError(
                f"workflow '{self.name}': missing required parameter(s) {', '.join(missing)}; valid parameters: {listed}"
            )
        bound = self.signature.bind(**params)
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            hint = self.hints.get(name, Any)
            if not typecheck.is_instance(value, hint):
                raise FlowTypeError(
                    f"workflow '{self.name}', parameter '{name}': expected {typecheck.describe(hint)}, "
                    f"got {typecheck.describe_value(value)}"
                )
        return dict(bound.arguments)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        builder = active_builder()
        if builder is None:
            return self._run(*args, **kwargs)
        frame = sys._getframe(1)
        return self._inline(builder, args, kwargs, call_site(frame.f_code.co_filename, frame.f_lineno))

    def _inline(self, builder: Builder, args: tuple, kwargs: dict, site: str) -> Any:
        """Add this workflow's nodes to an outer build under the prefix `name/`."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise WorkflowDefinitionError(f"{site}: workflow '{self.name}': {exc}") from None
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            hint = self.hints.get(name, Any)
            actual = value.type if isinstance(value, Future) else None
            ok = (
                typecheck.fits(actual, hint)
                if isinstance(value, Future)
                else typecheck.is_instance(value, hint)
            )
            if not ok:
                got = (
                    typecheck.describe(actual)
                    if isinstance(value, Future)
                    else typecheck.describe_value(value)
                )
                raise FlowTypeError(
                    f"{site}: workflow '{builder.workflow}', sub-workflow '{self.name}', parameter '{name}': "
                    f"expected {typecheck.describe(hint)}, got {got}"
                )
        outer_prefix = builder.prefix
        prefix = builder.unique(self.name, prefix=True) + "/"
        builder.prefix, builder.workflows = prefix, [*builder.workflows, self.name]
        try:
            return self.fn(*bound.args, **bound.kwargs)
        finally:
            builder.prefix, builder.workflows = outer_prefix, builder.workflows[:-1]

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        from flowlib.api import run

        bound = self.signature.bind(*args, **kwargs)
        result = run(self, params=dict(bound.arguments))
        if result.status != "succeeded":
            raise RunFailed(f"run {result.run_id} of workflow '{self.name}' {result.status}", result)
        return result.outputs

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


def workflow(fn: Callable[P, R]) -> Workflow[P, R]:
    """Make a workflow of `fn`, whose body calls operators and other workflows."""
    if not inspect.isfunction(fn):
        raise WorkflowDefinitionError(f"@workflow decorates functions, got {fn!r}")
    return Workflow(fn)
