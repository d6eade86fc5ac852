"""Build-time and run-time type checks between values, futures and annotations.

beartype does the work: `door.is_subhint` for future-to-parameter checks and
`door.is_bearable` for literals and returned values. The PEP 484 numeric tower
(an int fits a float) is applied to both.
"""

from __future__ import annotations

import collections.abc
import functools
import sys
import types
import typing
from typing import Any

_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)


@functools.cache
def _conf() -> Any:
    from beartype import BeartypeConf

    return BeartypeConf(is_pep484_tower=True)


def _widen(hint: Any) -> Any:
    """Return `hint` with float widened to float | int (and complex likewise), recursively."""
    if hint is float:
        return float | int
    if hint is complex:
        return complex | float | int
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is None or not args:
        return hint
    if origin in _UNION_TYPES:
        return typing.Union[tuple(_widen(arg) for arg in args)]  # noqa: UP007 (built at run time)
    if origin is typing.Annotated or origin is typing.Literal:
        return hint
    widened = tuple(_widen(arg) if arg is not Ellipsis else arg for arg in args)
    try:
        return hint.copy_with(widened) if hasattr(hint, "copy_with") else origin[widened]
    except TypeError:
        return hint


@functools.lru_cache(maxsize=4096)
def _fits_cached(actual: Any, expected: Any) -> bool:
    from beartype.door import is_subhint

    try:
        if is_subhint(actual, _widen(expected)):
            return True
    except Exception:
        return True  # a hint beartype cannot reason about is not ours to refuse
    # A bare `list` upstream annotation fits `list[int]`: the item type is unknown, not wrong.
    origin = typing.get_origin(expected)
    return origin is not None and actual is origin


def fits(actual: Any, expected: Any) -> bool:
    """Return whether a value annotated `actual` may be passed where `expected` is annotated."""
    if actual is Any or expected is Any or actual is expected:
        return True
    try:
        if actual == expected:  # list[int] and list[int] built apart: no need to ask beartype
            return True
    except Exception:
        pass
    try:
        return _fits_cached(actual, expected)
    except TypeError:  # unhashable hint
        return _fits_cached.__wrapped__(actual, expected)


_TOWER: dict[type, tuple[type, ...]] = {float: (float, int), complex: (complex, float, int)}


def numpy_number(value: Any, hint: Any) -> bool:
    """Whether `value` is a numpy integer or floating scalar that an `int` / `float` annotation
    accepts (numpy's bool is not a number here)."""
    np = sys.modules.get("numpy")
    if np is None or not isinstance(value, np.generic):
        return False
    if hint is int:
        return isinstance(value, np.integer)
    if hint is float or hint is complex:
        return isinstance(value, (np.integer, np.floating))
    return False


def is_instance(value: Any, hint: Any) -> bool:
    """Return whether `value` satisfies the annotation `hint`."""
    if hint is Any:
        return True
    if type(hint) is type:  # a plain class: what beartype would do, without its per-call overhead
        return isinstance(value, _TOWER.get(hint, hint)) or numpy_number(value, hint)
    from beartype.door import is_bearable

    try:
        if not is_bearable(value, hint, conf=_conf()):
            return False
    except Exception:
        return True
    return _items_fit(value, hint)


_ITEMS = (
    list,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.MutableSet,
    collections.abc.Collection,
    collections.abc.Iterable,
)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _items_fit(value: Any, hint: Any) -> bool:
    """Check every item of a container value; beartype checks one random item, so a bad item
    deep in a literal list would pass some builds and fail others."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if not args:
        return True
    if origin is typing.Annotated:
        return is_instance(value, args[0])
    if origin in _UNION_TYPES:
        return any(is_instance(value, arg) for arg in args)
    if origin is tuple and isinstance(value, tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return all(is_instance(item, args[0]) for item in value)
        return len(args) == len(value) and all(map(is_instance, value, args))
    if origin in _ITEMS and len(args) == 1 and isinstance(value, (list, tuple, set, frozenset)):
        return all(is_instance(item, args[0]) for item in value)
    if origin in _MAPPINGS and len(args) == 2 and isinstance(value, dict):
        key, item = args
        return all(is_instance(k, key) and is_instance(v, item) for k, v in value.items())
    return True


def describe(hint: Any) -> str:
    """Return a short readable name for an annotation (`list[int]`, `Split`, `int | None`)."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__qualname__
    text = repr(hint)
    return text.replace("typing.", "")


def describe_value(value: Any) -> str:
    """Return `type 'value'` for an error message, shortened."""
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{type(value).__qualname__} {shown}"


def element_hints(hint: Any, value: list | tuple | dict) -> tuple[Any, list[Any]]:
    """For a container passed where `hint` is annotated: (the key hint, one hint per element).

    `list[T]` / `Sequence[T]` give T for each element, `tuple[A, B]` one each, `tuple[T, ...]`
    T, `dict[K, V]` K and V; a union picks its first member of the container's kind; anything
    else gives Any.
    """
    n = len(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNION_TYPES:
        for arg in args:
            if _kind_fits(arg, value):
                return element_hints(arg, value)
        return Any, [Any] * n
    if isinstance(value, dict):
        if origin in _MAPPINGS and len(args) == 2:
            return args[0], [args[1]] * n
        return Any, [Any] * n
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return Any, [args[0]] * n
        return Any, [*args, *[Any] * max(0, n - len(args))][:n]
    if origin in _ITEMS and len(args) == 1:
        return Any, [args[0]] * n
    return Any, [Any] * n


def _kind_fits(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    if isinstance(value, dict):
        return origin in _MAPPINGS
    if isinstance(value, tuple):
        return origin is tuple or (origin in _ITEMS and origin not in (list, set, frozenset))
    return origin in (list, *_ITEMS) and origin not in (set, frozenset)


def container_mismatch(value: list | tuple | dict, hint: Any) -> str | None:
    """Why a container (that holds futures) does not fit `hint`, or None when it does."""
    if hint is Any:
        return None
    if not _kind_fits(hint, value) and not (
        typing.get_origin(hint) in _UNION_TYPES and any(_kind_fits(a, value) for a in typing.get_args(hint))
    ):
        return f"a {type(value).__name__} of futures"
    if isinstance(value, tuple):
        args = typing.get_args(hint)
        if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            return f"a tuple of {len(value)} elements"
    return None


def floats_where_wanted(value: Any, hint: Any) -> Any:
    """`value` with every int where `hint` asks for a float (and not an int) made a float, at any
    depth (`list[float]` from `[1, 2]`), so that `1` and `1.0` give one cache key."""
    if type(value) is int:
        if not wants_float(hint):
            return value
        try:
            return float(value)
        except OverflowError:
            raise ValueError(
                f"a whole number of {len(str(abs(value)))} digits is too large for a float"
            ) from None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        return floats_where_wanted(value, rest[0]) if len(rest) == 1 else value
    if origin is typing.Annotated:
        return floats_where_wanted(value, args[0])
    if type(value) is list and origin in (list, collections.abc.Sequence, collections.abc.Iterable) and args:
        return [floats_where_wanted(item, args[0]) for item in value]
    if type(value) is tuple and origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(floats_where_wanted(item, args[0]) for item in value)
        if len(args) == len(value):
            return tuple(floats_where_wanted(item, arg) for item, arg in zip(value, args, strict=True))
    if type(value) is dict and origin in (dict, collections.abc.Mapping) and len(args) == 2:
        return {key: floats_where_wanted(item, args[1]) for key, item in value.items()}
    return value


def wants_float(hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        return float in args and int not in args
    return hint is float
