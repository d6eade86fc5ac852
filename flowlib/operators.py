"""`@operator`: typed units of work that become DAG nodes when called in a workflow build."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from flowlib import typecheck
from flowlib.dag import Builder, Container, Input, Literal, Node, active_builder, call_site
from flowlib.errors import FlowTypeError, WorkflowDefinitionError
from flowlib.futures import RETURN, Future, Ref
from flowlib.resources import Distributed, Resources

P = ParamSpec("P")
R = TypeVar("R")

_OPTIONS = (
    "name",
    "cache",
    "version",
    "retries",
    "retry_delay",
    "timeout",
    "resources",
    "executor",
    "distributed",
)


def _definition_site(fn: Callable[..., Any]) -> str:
    code = fn.__code__
    return call_site(code.co_filename, code.co_firstlineno)


def _caller_site(depth: int = 2) -> str:
    frame = sys._getframe(depth)
    return call_site(frame.f_code.co_filename, frame.f_lineno)


@functools.cache
def _hashing() -> Any:
    # Imported on the first literal, once: a per-call import statement costs more than the hash.
    from flowlib import hashing

    return hashing


def namedtuple_fields(hint: Any) -> dict[str, Any] | None:
    """Return field name -> annotation when `hint` is a NamedTuple class, else None."""
    if isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields"):
        annotations = typing.get_type_hints(hint) if hasattr(hint, "__annotations__") else {}
        return {name: annotations.get(name, Any) for name in hint._fields}
    return None


def output_fields(hint: Any) -> dict[str, Any] | None:
    """The separate outputs a return annotation gives: a NamedTuple's fields by name, a
    `tuple[A, B]`'s elements as "0", "1"; None for a single output."""
    fields = namedtuple_fields(hint)
    if fields is not None:
        return fields
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if args and Ellipsis not in args and args != ((),):
            return {str(i): arg for i, arg in enumerate(args)}
    return None


@dataclasses.dataclass(frozen=True)
class Options:
    """An operator's execution options; `with_options` copies them with overrides."""

    name: str
    cache: bool = True
    version: str | None = None
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    resources: Resources = dataclasses.field(default_factory=Resources)
    executor: str | None = None
    distributed: Distributed | None = None


class Operator(Generic[P, R]):
    """A decorated function: a plain call outside a build, a DAG node inside one."""

    __flow_operator__ = True

    def __init__(self, fn: Callable[P, R], options: Options) -> None:
        self.fn = fn
        self.options = options
        self.qualname: str = fn.__qualname__
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        self._hints: dict[str, Any] | None = None
        self._check_definition()

    # -- definition -----------------------------------------------------------------
    def _check_definition(self) -> None:
        where = _definition_site(self.fn)
        for param in self.signature.parameters.values():
            if param.kind == param.VAR_KEYWORD:
                raise WorkflowDefinitionError(
                    f"{where}: operator '{self.qualname}', parameter '{param.name}': **kwargs cannot be "
                    "DAG inputs; name each parameter"
                )
            if param.annotation is inspect.Parameter.empty:
                raise WorkflowDefinitionError(
                    f"{where}: operator '{self.qualname}', parameter '{param.name}' has no type annotation; "
                    "annotate every parameter (use typing.Any to accept anything)"
                )
        if self.signature.return_annotation is inspect.Signature.empty:
            raise WorkflowDefinitionError(
                f"{where}: operator '{self.qualname}' has no return annotation; annotate it (-> None if nothing)"
            )
        options = self.options
        if not isinstance(options.name, str) or not options.name or any(c in options.name for c in "/[]"):
            raise WorkflowDefinitionError(
                f"{where}: operator '{self.qualname}': name {options.name!r} must be a non-empty string "
                "without '/', '[' or ']' (they separate sub-workflows and map items)"
            )

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        checks = {
            "cache": isinstance(options.cache, bool),
            "version": options.version is None or isinstance(options.version, str),
            "retries": isinstance(options.retries, int)
            and not isinstance(options.retries, bool)
            and options.retries >= 0,
            "retry_delay": number(options.retry_delay) and options.retry_delay >= 0,
            "timeout": options.timeout is None or (number(options.timeout) and options.timeout > 0),
            "executor": options.executor is None
            or (isinstance(options.executor, str) and bool(options.executor)),
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            name = wrong[0]
            raise WorkflowDefinitionError(
                f"{where}: operator '{self.qualname}': {name}={getattr(options, name)!r} is not valid; "
                "cache is a bool, version and executor strings, retries an int >= 0, "
                "retry_delay seconds >= 0, timeout seconds > 0"
            )
        if not isinstance(options.resources, Resources):
            raise WorkflowDefinitionError(
                f"{where}: operator '{self.qualname}': resources= takes a Resources(...)"
            )
        if options.distributed is not None and not isinstance(options.distributed, Distributed):
            raise WorkflowDefinitionError(
                f"{where}: operator '{self.qualname}': distributed= takes a Distributed(...)"
            )

    @property
    def hints(self) -> dict[str, Any]:
        """Resolved annotations, evaluated on first use so forward references work."""
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.fn)
            except Exception as exc:
                raise WorkflowDefinitionError(
                    f"{_definition_site(self.fn)}: operator '{self.qualname}': cannot resolve its annotations: {exc}"
                ) from None
        return self._hints

    @property
    def return_type(self) -> Any:
        return self.hints.get("return", Any)

    @functools.cached_property
    def output_fields(self) -> dict[str, Any] | None:
        return output_fields(self.return_type)

    @functools.cached_property
    def spreads(self) -> bool:
        """Whether the function takes `*args` (a worker spreads that input's tuple)."""
        return any(p.kind == p.VAR_POSITIONAL for p in self.signature.parameters.values())

    @property
    def output_class(self) -> type | None:
        """The NamedTuple class of a multi-output operator (None for a plain tuple or one output)."""
        hint = self.return_type
        return hint if namedtuple_fields(hint) is not None else None

    @property
    def output_names(self) -> list[str]:
        return list(self.output_fields or [RETURN])

    # option shortcuts -------------------------------------------------------------------
    name = property(lambda self: self.options.name)
    cache = property(lambda self: self.options.cache)
    version = property(lambda self: self.options.version)
    retries = property(lambda self: self.options.retries)
    retry_delay = property(lambda self: self.options.retry_delay)
    timeout = property(lambda self: self.options.timeout)
    resources = property(lambda self: self.options.resources)
    executor = property(lambda self: self.options.executor)
    distributed = property(lambda self: self.options.distributed)

    def with_options(self, **overrides: Any) -> Operator[P, R]:
        """Return a copy with some options replaced (name, cache, retries, resources, ...)."""
        unknown = sorted(set(overrides) - set(_OPTIONS))
        if unknown:
            raise WorkflowDefinitionError(
                f"{_caller_site()}: operator '{self.qualname}': unknown option(s) {', '.join(unknown)}; "
                f"valid: {', '.join(_OPTIONS)}"
            )
        return Operator(self.fn, dataclasses.replace(self.options, **overrides))

    # -- calls ----------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        builder = active_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        frame = sys._getframe(1)
        site = call_site(frame.f_code.co_filename, frame.f_lineno)
        return self._add_node(builder, self._bind(args, kwargs, site, builder), site)  # type: ignore[return-value]

    def _bind(self, args: tuple, kwargs: dict, site: str, builder: Builder) -> dict[str, Any]:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise WorkflowDefinitionError(
                f"{site}: workflow '{builder.workflow}', operator '{self.qualname}': {exc}"
            ) from None
        bound.apply_defaults()
        return bound.arguments

    def _input(self, param: str, value: Any, site: str, builder: Builder, hint: Any) -> Input:
        if self.signature.parameters[param].kind == inspect.Parameter.VAR_POSITIONAL:
            hint = tuple[hint, ...]  # type: ignore[valid-type]  # `*xs: int` arrive as a tuple of ints
        return self._value(param, "", value, site, builder, hint)

    def _value(self, param: str, path: str, value: Any, site: str, builder: Builder, hint: Any) -> Input:
        """One input (or an element of a container input at `path`), checked against `hint`."""
        if isinstance(value, Future):
            if not typecheck.fits(value.type, hint):
                got = f"{typecheck.describe(value.type)} (output of '{value.ref.node}')"
                raise self._type_error(param + path, hint, got, site, builder)
            return value.ref
        try:
            holds = _holds_future(value)
        except RecursionError:
            raise WorkflowDefinitionError(
                f"{site}: workflow '{builder.workflow}', operator '{self.qualname}', parameter '{param}{path}': "
                "the value is nested too deeply to be an input"
            ) from None
        if holds:
            return self._container(param, path, value, site, builder, hint)
        if not typecheck.is_instance(value, hint):
            raise self._type_error(param + path, hint, typecheck.describe_value(value), site, builder)
        hashing = _hashing()
        try:
            return Literal(value, hashing.literal_digest(value))
        except hashing.UnhashableLiteral as exc:
            raise hashing.UnhashableLiteral(
                f"{site}: workflow '{builder.workflow}', operator '{self.qualname}', parameter '{param}{path}': {exc}"
            ) from None

    def _container(
        self, param: str, path: str, value: Any, site: str, builder: Builder, hint: Any
    ) -> Container:
        """A list, tuple or dict holding futures: every future in it an edge, every element checked."""
        if type(value) not in (list, tuple, dict):
            raise WorkflowDefinitionError(
                f"{site}: workflow '{builder.workflow}', operator '{self.qualname}', parameter '{param}{path}': "
                f"futures inside a {type(value).__name__} are not inputs; put them in a list, tuple or dict"
            )
        problem = typecheck.container_mismatch(value, hint)
        if problem is not None:
            raise self._type_error(param + path, hint, problem, site, builder)
        key_hint, hints = typecheck.element_hints(hint, value)
        if isinstance(value, dict):
            keys = tuple(value)
            for key in keys:
                if not typecheck.is_instance(key, key_hint):
                    raise self._type_error(
                        f"{param}{path} key", key_hint, typecheck.describe_value(key), site, builder
                    )
            items = tuple(
                self._value(param, f"{path}[{key!r}]", item, site, builder, item_hint)
                for (key, item), item_hint in zip(value.items(), hints, strict=True)
            )
            _hashing().literal_digest(list(keys))  # keys enter the digest: refuse unhashable ones now
            return Container("dict", items, keys)
        items = tuple(
            self._value(param, f"{path}[{i}]", item, site, builder, item_hint)
            for i, (item, item_hint) in enumerate(zip(value, hints, strict=True))
        )
        return Container(type(value).__name__, items)

    def _type_error(self, param: str, hint: Any, got: str, site: str, builder: Builder) -> FlowTypeError:
        return FlowTypeError(
            f"{site}: workflow '{builder.workflow}', operator '{self.qualname}', parameter '{param}': "
            f"expected {typecheck.describe(hint)}, got {got}"
        )

    def _add_node(self, builder: Builder, arguments: dict[str, Any], site: str) -> Future:
        hints = self.hints
        inputs = {
            param: self._input(param, value, site, builder, hints.get(param, Any))
            for param, value in arguments.items()
        }
        name = builder.unique(self.options.name)
        builder.add(Node(name, self, inputs, site))
        return Future(Ref(name), self.return_type, self.output_fields)

    def _map_result(self, base: str) -> Future:
        """A map's future: the list of item results; a multi-output operator's map also gives one
        list future per output (`op.map(xs).train`)."""
        fields = self.output_fields
        per_field = {name: list[hint] for name, hint in fields.items()} if fields else None  # type: ignore[valid-type]
        return Future(Ref(base), list[self.return_type], per_field, unpacks=False)  # type: ignore[name-defined]

    def map(self, items: Any, **fixed: Any) -> Any:
        """Fan out over `items` (a list or a Future of a list): one node per element.

        Returns a Future of the list of results, gathered by a node named after the operator.
        """
        builder = active_builder()
        if builder is None:
            return [self.fn(item, **fixed) for item in items]
        frame = sys._getframe(1)
        site = call_site(frame.f_code.co_filename, frame.f_lineno)
        param = self._map_param(fixed, site, builder)
        hint = self.hints.get(param, Any)
        base = builder.unique(self.options.name)
        result = self._map_result(base)
        fixed_inputs = {
            key: self._input(key, value, site, builder, self.hints.get(key, Any))
            for key, value in fixed.items()
        }
        if isinstance(items, Future):
            item_type = typing.get_args(items.type)[0] if typing.get_args(items.type) else Any
            if typing.get_origin(items.type) not in (list, None) and items.type is not Any:
                raise self._type_error(param, list[hint], typecheck.describe(items.type), site, builder)  # type: ignore[valid-type]
            if not typecheck.fits(item_type, hint):
                raise self._type_error(
                    param,
                    hint,
                    f"{typecheck.describe(item_type)} (items of '{items.ref.node}')",
                    site,
                    builder,
                )
            builder.add(
                Node(base, self, {param: items.ref, **fixed_inputs}, site, kind="map", map_param=param)
            )
            return result
        if not isinstance(items, (list, tuple)):
            raise self._type_error(param, list[hint], typecheck.describe_value(items), site, builder)  # type: ignore[valid-type]
        literals = self._plain_literals(items, hint)
        values = literals or [self._input(param, item, site, builder, hint) for item in items]
        names = [f"{base}[{index}]" for index in range(len(items))]
        add = builder.add
        for name, value in zip(names, values, strict=True):
            add(Node(name, self, {param: value, **fixed_inputs}, site))
        builder.add(Node(base, self, {}, site, kind="map", map_param=param, items=names))
        return result

    def _plain_literals(self, items: list[Any] | tuple[Any, ...], hint: Any) -> list[Literal] | None:
        """The items as Literals in one pass when they are all plain ints or all plain strs that fit
        `hint` (the common big map: indices, ids, paths); else None, and each is checked alone."""
        kinds = {type(item) for item in items}
        if len(kinds) != 1 or not kinds <= {int, str} or not typecheck.is_instance(items[0], hint):
            return None
        digests = _hashing().literal_digests(items)
        return [Literal(item, digest) for item, digest in zip(items, digests, strict=True)]

    def _map_param(self, fixed: dict[str, Any], site: str, builder: Builder) -> str:
        free = [name for name in self.signature.parameters if name not in fixed]
        if not free:
            raise WorkflowDefinitionError(
                f"{site}: workflow '{builder.workflow}', operator '{self.qualname}': map needs one parameter "
                "left free for the items, but all are fixed"
            )
        return free[0]

    def __repr__(self) -> str:
        return f"<operator {self.qualname}>"


def _holds_future(value: Any) -> bool:
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(isinstance(item, Future) or _holds_future(item) for item in value)
    if isinstance(value, dict):
        return any(isinstance(item, Future) or _holds_future(item) for item in value.values())
    return False


holds_future = _holds_future


@overload
def operator(fn: Callable[P, R], /) -> Operator[P, R]: ...
@overload
def operator(
    *,
    name: str | None = None,
    cache: bool = True,
    version: str | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    resources: Resources | None = None,
    executor: str | None = None,
    distributed: Distributed | None = None,
) -> Callable[[Callable[P, R]], Operator[P, R]]: ...
def operator(fn: Any = None, /, **options: Any) -> Any:
    """Make a typed operator of `fn`; usable as `@operator` or `@operator(retries=2, ...)`."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise WorkflowDefinitionError(
            f"{_caller_site()}: @operator: unknown option(s) {', '.join(unknown)}; valid: {', '.join(_OPTIONS)}"
        )
    if options.get("resources") is None:
        options.pop("resources", None)

    def decorate(function: Callable[P, R]) -> Operator[P, R]:
        if not inspect.isfunction(function):
            raise WorkflowDefinitionError(f"@operator decorates functions, got {function!r}")
        name = options.get("name") or function.__name__
        return Operator(function, Options(**{**options, "name": name}))

    return decorate(fn) if fn is not None else decorate
