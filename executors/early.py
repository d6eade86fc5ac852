"""A worker template started before the pipeline is imported (`flow run`, `flow sweep`).

The local pool's template imports what the pipeline imports (torch: seconds), then forks the
workers. Started only once the pool opens, that import follows the scheduler's own import of the
pipeline; started here first, from the modules the pipeline's source names, the two overlap on a
machine with a core to spare. The first pool that opens with default settings adopts it.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

INSTALLED = tuple({os.path.join(p, "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


def source_imports(file: str) -> set[str]:
    """The module names a Python file's source imports (absolute imports; `from a import b` gives
    `a` and `a.b`, which may be an attribute rather than a module); none if it cannot be read."""
    import ast

    try:
        with open(file, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def installed(file: str) -> bool:
    """Whether `file` belongs to an installed package (site-packages, the interpreter's own)."""
    return "-packages" in file or file.startswith(INSTALLED)


def library_imports(file: str) -> list[str]:
    """The modules a pipeline's source imports that are libraries (found on the path, outside the
    pipeline's folder, not the stdlib), read without importing it; some names may be attributes,
    not modules: the template skips those."""
    import importlib.util

    names = source_imports(file)
    own = os.path.join(os.path.dirname(os.path.abspath(file)), "")
    library = {}
    for top in {name.partition(".")[0] for name in names} - set(sys.stdlib_module_names):
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
        library[top] = bool(origin) and (installed(origin) or not origin.startswith(own))  # type: ignore[union-attr]
    return sorted(name for name in names if library.get(name.partition(".")[0]))


# A template started by `start_early`, for the first pool that opens with the defaults. One slot
# in the process, on purpose: the CLI starts it before it knows the plan (see start_early).
_early: list[Any] = []  # executors.launch.Template


def start_early(pipeline_file: str, config: Any) -> None:
    """Start a local pool's worker template now, importing the installed modules the pipeline
    imports, while this process imports the pipeline itself: on a small machine the two imports
    (torch takes seconds) then overlap instead of following one another. Only when `config`'s
    default executor is `local` with forked workers. The first pool that opens with default
    settings adopts it; one left unused is closed at exit."""
    if config.executor != "local" or config.executor_settings("local").get("start", "fork") != "fork":
        return
    warm = library_imports(pipeline_file)
    if _early or not warm or not hasattr(os, "fork"):
        return
    from executors.launch import Template, thread_settings
    from executors.template import NVML_CHECK, SKIP_MISSING, UNSET, WARM

    env = {
        **os.environ,
        "FLOWLIB_WORKER_SYS_PATH": json.dumps(sys.path),
        **thread_settings(os.environ),
        WARM: json.dumps(warm),
        SKIP_MISSING: "1",
    }
    if NVML_CHECK not in os.environ:
        env.update({NVML_CHECK: "1", UNSET: NVML_CHECK})
    try:
        _early.append(Template(env))
    except OSError:
        return
    atexit.register(_close_early)


def adopt() -> Any:
    """The template `start_early` started, once (None when there is none)."""
    return _early.pop() if _early else None


def _close_early() -> None:
    while _early:
        _early.pop().close()
