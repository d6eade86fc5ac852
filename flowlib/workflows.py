"""`@workflow`: compose operators into a DAG; build it, or call it to run it."""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from flowlib import typecheck
from flowlib.dag import DAG, Builder, active_builder, call_site, reset_builder, set_builder
from flowlib.errors import FlowTypeError, ParameterError, RunFailed, WorkflowDefinitionError
from flowlib.futures import Future
from flowlib.operators import holds_future, namedtuple_fields

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
        dag = DAG(workflow=self.name, file=self.file, params=arguments, module=self.fn.__module__)
        builder = Builder(dag, self.name)
        token = set_builder(builder)
        try:
            dag.outputs = self._checked_return(self.fn(**arguments), self.name)
        finally:
            reset_builder(token)
        return dag

    @property
    def site(self) -> str:
        return call_site(self.fn.__code__.co_filename, self.fn.__code__.co_firstlineno)

    def _checked_return(self, value: Any, shown: str) -> Any:
        """The value the workflow body returned, checked against its return annotation (a tuple of
        the right length returned where a NamedTuple is declared becomes that NamedTuple)."""
        hint = self.hints.get("return", Any)
        fields = namedtuple_fields(hint)
        if fields is not None and type(value) is tuple and len(value) == len(fields):
            value = hint(*value)
        problem = mismatch(value, hint)
        if problem is not None:
            path, expected, got = problem
            raise FlowTypeError(
                f"{self.site}: workflow '{shown}', return value{path}: expected {typecheck.describe(expected)}, "
                f"got {got}"
            )
        return value

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
            try:  # `t: float = 2` or flowlib.run(params={"t": 2}) as `-p t=2` gives it: one cache key
                value = bound.arguments[name] = typecheck.floats_where_wanted(value, hint)
            except ValueError as exc:
                raise ParameterError(f"workflow '{self.name}', parameter '{name}': {exc}") from None
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
            problem = mismatch(value, self.hints.get(name, Any))
            if problem is not None:
                path, expected, got = problem
                raise FlowTypeError(
                    f"{site}: workflow '{builder.workflow}', sub-workflow '{self.name}', parameter '{name}{path}': "
                    f"expected {typecheck.describe(expected)}, got {got}"
                )
        outer_prefix = builder.prefix
        prefix = builder.unique(self.name, prefix=True) + "/"
        builder.prefix, builder.workflows = prefix, [*builder.workflows, self.name]
        try:
            return self._checked_return(self.fn(*bound.args, **bound.kwargs), self.name)
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


def mismatch(value: Any, hint: Any) -> tuple[str, Any, str] | None:
    """Why `value` (a future, a container holding futures, or a literal) does not fit `hint`:
    (the path of the element at fault, what it was expected to be, what it is); None when it fits."""
    if isinstance(value, Future):
        if typecheck.fits(value.type, hint):
            return None
        return "", hint, f"{typecheck.describe(value.type)} (output of '{value.ref.node}')"
    if holds_future(value):
        problem = typecheck.container_mismatch(value, hint)
        if problem is not None:
            return "", hint, problem
        _, hints = typecheck.element_hints(hint, value)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for (key, item), item_hint in zip(items, hints, strict=True):
            found = mismatch(item, item_hint)
            if found is not None:
                return f"[{key!r}]{found[0]}", found[1], found[2]
        return None
    if typecheck.is_instance(value, hint):
        return None
    return "", hint, typecheck.describe_value(value)


def workflow(fn: Callable[P, R]) -> Workflow[P, R]:
    """Make a workflow of `fn`, whose body calls operators and other workflows."""
    if not inspect.isfunction(fn):
        raise WorkflowDefinitionError(f"@workflow decorates functions, got {fn!r}")
    return Workflow(fn)
