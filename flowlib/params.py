"""Parse workflow parameters from the command line (`-p k=v`, `--params-file`) by annotation."""

from __future__ import annotations

import enum
import inspect
import json
import types
import typing
from pathlib import Path
from typing import Any

from flowlib import typecheck
from flowlib.errors import ParameterError
from flowlib.files import File
from flowlib.workflows import Workflow

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Read parameters from a JSON or TOML file, chosen by its extension."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ParameterError(f"{path}: cannot read the parameters file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ParameterError(
            f"{path}: cannot read the parameters file: not UTF-8 text ({exc.reason})"
        ) from None
    try:
        if file.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif file.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ParameterError(f"{path}: a parameters file must end in .json or .toml")
    except ParameterError:
        raise
    except Exception as exc:
        raise ParameterError(f"{path}: cannot parse the parameters file: {exc}") from None
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: the parameters file must hold an object of name = value")
    return data


def split_assignments(assignments: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Turn ["k=v", ...] into {k: v}; a missing '=' is an error."""
    result: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"-p {item!r}: expected NAME=VALUE")
        if key.strip() in result:
            raise ParameterError(
                f"-p {_shown(key.strip())} is given twice ({result[key.strip()]!r} and {value!r}); give it once"
            )
        result[key.strip()] = value
    return result


def parse_params(
    wf: Workflow, raw: dict[str, str], from_file: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Convert raw strings (and file values) to the types the workflow's annotations ask for.

    `-p` values beat the file's; unknown names are errors that list the valid ones.
    """
    parameters = wf.parameters()
    valid = ", ".join(parameters) or "none"
    merged: dict[str, Any] = dict(from_file or {})
    unknown = sorted((set(merged) | set(raw)) - set(parameters))
    if unknown:
        raise ParameterError(
            f"workflow '{wf.name}': unknown parameter(s) {', '.join(map(_shown, unknown))}; "
            f"valid parameters: {valid}"
        )
    result = {}
    for name, value in merged.items():
        try:
            result[name] = _coerce_loaded(wf, name, value)
        except RecursionError:
            raise ParameterError(f"workflow '{wf.name}', parameter '{name}': nested too deeply") from None
    for name, text in raw.items():
        result[name] = convert(wf, name, text)
    return result


def _shown(name: str) -> str:
    """A parameter name as an error message shows it: quoted when it would break the line."""
    return name if name.isprintable() else repr(name)


def _hint(wf: Workflow, name: str) -> Any:
    hint = wf.hints.get(name)
    if hint is None:
        default = wf.parameters()[name].default
        return type(default) if default is not inspect.Parameter.empty and default is not None else Any
    return hint


def _coerce_loaded(wf: Workflow, name: str, value: Any) -> Any:
    hint = _hint(wf, name)
    if isinstance(value, bool) and _wants_number(hint):
        raise ParameterError(
            f"workflow '{wf.name}', parameter '{name}': expected {typecheck.describe(hint)}, got {value!r}"
        )
    try:
        value = typecheck.floats_where_wanted(
            value, hint
        )  # as `-p x=3` gives: 3 and 3.0 hash differently, so the cache would miss
    except ValueError as exc:
        raise ParameterError(f"workflow '{wf.name}', parameter '{name}': {exc}") from None
    if typecheck.is_instance(value, hint):
        return value
    if isinstance(value, str):
        return convert(wf, name, value)  # a path, a File, an enum member, ... as `-p` reads them
    raise ParameterError(
        f"workflow '{wf.name}', parameter '{name}': expected {typecheck.describe(hint)}, got {typecheck.describe_value(value)}"
    )


def _members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _wants_number(hint: Any) -> bool:
    """Whether `hint` asks for an int or a float and not a bool (a JSON `true` is no number)."""
    members = _members(hint)
    return bool not in members and any(m in (int, float) for m in members)


def convert(wf: Workflow, name: str, text: str) -> Any:
    """Convert one command-line string for parameter `name`."""
    hint = _hint(wf, name)
    try:
        return _convert(text, hint, Path(wf.file).parent)
    except json.JSONDecodeError:
        example = "[1, 2, 3]" if _origin_in(hint, (list, tuple, set)) else '{"key": 1}'
        raise ParameterError(
            f"workflow '{wf.name}', parameter '{name}': cannot read {text!r} as {typecheck.describe(hint)}; "
            f"write it as JSON, e.g. -p '{name}={example}'"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ParameterError(
            f"workflow '{wf.name}', parameter '{name}': cannot read {text!r} as {typecheck.describe(hint)} ({exc})"
        ) from None
    except RecursionError:
        raise ParameterError(
            f"workflow '{wf.name}', parameter '{name}': cannot read {text[:40]!r}... as "
            f"{typecheck.describe(hint)} (nested too deeply)"
        ) from None


def _origin_in(hint: Any, kinds: tuple[type, ...]) -> bool:
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(origin, kinds)


def _convert(text: str, hint: Any, folder: Path) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        try:
            return json.loads(text)
        except ValueError:
            return text
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if type(None) in args and text.strip().lower() in ("none", "null", ""):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(text, arg, folder)
            except (ValueError, TypeError):
                continue
        raise ValueError("no member of the union accepts it")
    if origin is typing.Literal:
        return _literal(text, typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(text, hint)
    if hint is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("use true/false")
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    if hint is str:
        return text
    if hint is Path or (isinstance(hint, type) and issubclass(hint, Path)):
        return Path(_path_text(text))
    if hint is File:
        try:
            return File(_path_text(text), base=folder)  # relative to the pipeline's folder
        except RuntimeError:  # `~user/...` of no such user
            raise ValueError(f"no home folder for {text.partition('/')[0]!r}") from None
    value = json.loads(text)
    if origin is tuple or hint is tuple:
        value = tuple(value)
    value = typecheck.floats_where_wanted(value, hint)
    if not typecheck.is_instance(value, hint):
        raise TypeError(f"got {typecheck.describe_value(value)}")
    return value


def _path_text(text: str) -> str:
    if "\x00" in text:
        raise ValueError("a path cannot hold a NUL character")
    return text


_NOT_JSON = object()


def _json_or_nothing(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON


def _literal(text: str, members: tuple[Any, ...]) -> Any:
    """A `Literal[...]` member: a string member by its plain text, any member as JSON, an enum member by name."""
    for wanted in (text, text.strip()):
        for member in members:
            if isinstance(member, str) and member == wanted:
                return member
            if isinstance(member, enum.Enum) and member.name == wanted:
                return member
    value = _json_or_nothing(text)
    for member in members:
        if type(member) is type(value) and member == value:  # `true` is not the member 1
            return member
    raise ValueError(f"expected one of {', '.join(map(repr, members))}")


def _enum(text: str, cls: type[enum.Enum]) -> enum.Enum:
    """An enum member by name, else by its value (a string value as plain text, any value as JSON)."""
    for wanted in (text, text.strip()):
        if wanted in cls.__members__:
            return cls.__members__[wanted]
        for member in cls:
            if isinstance(member.value, str) and member.value == wanted:
                return member
    value = _json_or_nothing(text)
    for member in cls:
        if type(member.value) is type(value) and member.value == value:
            return member
    raise ValueError(f"expected one of {', '.join(cls.__members__)}")
