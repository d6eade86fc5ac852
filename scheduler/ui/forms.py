"""Launch forms generated from a workflow's typed parameters: a number field for int and float,
a checkbox for bool, a text field for str and Path, a JSON field for lists and dicts, each
named after its parameter and filled with its default. What comes back is text, as `-p`
gives it, for the same parser to check."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_OPTIONAL = re.compile(r"^(?:Optional\[(?P<inner>.+)\]|(?P<left>.+?) \| None|None \| (?P<right>.+))$")
_JSON = ("list", "dict", "tuple", "set", "List", "Dict", "Tuple", "Sequence", "Mapping", "frozenset")


@dataclass
class Field:
    name: str
    type: str  # the annotation as text
    widget: str  # "number" | "checkbox" | "text" | "json"
    value: str
    checked: bool = False
    required: bool = False
    step: str = "any"
    blank_is_default: bool = False  # an empty field means the default (None), not ""


def widget_of(type_text: str) -> tuple[str, str]:
    """(widget, number step) for an annotation written as text (`int`, `list[int]`, `Path | None`)."""
    text = type_text.strip()
    optional = _OPTIONAL.match(text)
    if optional:
        text = (optional.group("inner") or optional.group("left") or optional.group("right")).strip()
    if text == "int":
        return "number", "1"
    if text == "float":
        return "number", "any"
    if text == "bool":
        return "checkbox", "any"
    if text.split("[", 1)[0] in _JSON or text.startswith(("dict", "list")):
        return "json", "any"
    return "text", "any"


def _text(widget: str, value: Any) -> str:
    if value is None:
        return ""
    if widget == "json":
        return json.dumps(value)
    if widget == "number" and isinstance(value, float):
        return repr(value)
    return str(value)


def from_parameters(parameters: list[dict[str, Any]], values: dict[str, Any] | None = None) -> list[Field]:
    """Fields for a deployment's typed parameters ({"name", "type", "default"}), filled with
    `values` where given (a run to launch again, a deployment's fixed parameters), else defaults."""
    fields = []
    for param in parameters:
        widget, step = widget_of(str(param.get("type", "str")))
        name = str(param["name"])
        value = (values or {}).get(name, param.get("default"))
        fields.append(
            Field(
                name,
                str(param.get("type", "")),
                widget,
                _text(widget, value),
                checked=widget == "checkbox" and value is True,
                required=bool(param.get("required")) and name not in (values or {}),
                step=step,
                blank_is_default=value is None,
            )
        )
    return fields


def from_values(values: dict[str, Any]) -> list[Field]:
    """Fields for a run's parameters when their annotations are not at hand: typed by value."""
    typed = []
    for name, value in values.items():
        kind = {bool: "bool", int: "int", float: "float"}.get(type(value))
        if kind is None:
            kind = "list" if isinstance(value, (list, dict)) else "str"
        typed.append({"name": name, "type": kind, "default": value})
    return from_parameters(typed)


def submitted(fields: list[Field], form: dict[str, str]) -> dict[str, str]:
    """The parameters a form sent, as `-p NAME=TEXT` would: an empty number or JSON field means
    the default; a checkbox is true when ticked (its hidden twin sends false otherwise)."""
    params = {}
    for field in fields:
        text = form.get(field.name)
        if text is None:
            continue
        if field.widget == "checkbox":
            params[field.name] = "true" if text in ("true", "on") else "false"
        elif not text.strip() and (field.widget in ("number", "json") or field.blank_is_default):
            continue
        else:
            params[field.name] = text
    return params


def refill(fields: list[Field], form: dict[str, str]) -> list[Field]:
    """The fields as the user left them (shown again beside the parser's complaint)."""
    for field in fields:
        if field.name in form:
            field.value = form[field.name]
            field.checked = form[field.name] in ("true", "on")
    return fields
