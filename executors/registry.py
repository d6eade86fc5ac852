"""Executors by name: built-ins as "module:Class" strings, plus the `flowlib.executors` entry points."""

from __future__ import annotations

from importlib import import_module

from executors.base import Executor
from flowlib.errors import ConfigError

BUILTIN = {
    "inline": "executors.inline:InlineExecutor",
    "local": "executors.local:LocalExecutor",
    "gpu": "executors.gpu:GpuExecutor",
    "ssh": "executors.ssh:SshExecutor",
    "ray": "executors.ray:RayExecutor",
}


def available() -> dict[str, str]:
    """Return name -> "module:Class" for every executor known here."""
    from importlib.metadata import entry_points  # scans every installed package: not on the hot path

    found = dict(BUILTIN)
    for entry in entry_points(group="flowlib.executors"):
        found.setdefault(entry.name, entry.value)
    return found


def executor_class(name: str) -> type[Executor]:
    """Import and return the executor class registered as `name`."""
    known = BUILTIN if name in BUILTIN else available()  # entry points are read only when needed
    if name not in known:
        raise ConfigError(
            f"unknown executor '{name}'; available: {', '.join(sorted(known))} "
            "(others install through the 'flowlib.executors' entry-point group)"
        )
    module_name, _, class_name = known[name].partition(":")
    try:
        cls = getattr(import_module(module_name), class_name)
    except ImportError as exc:
        raise ConfigError(f"executor '{name}' cannot be imported: {exc}") from None
    return cls
