"""Load a pipeline file by path and find the workflows it defines."""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from flowlib.dag import call_site
from flowlib.errors import FlowError, PipelineLoadError
from flowlib.workflows import Workflow


def find_object(module: str, qualname: str) -> object | None:
    """`module.qualname` if that module imports and has it, else None (the caller falls back)."""
    try:
        obj: object = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception:
        return None


def module_name_for(path: Path) -> str:
    """The module name a pipeline file is imported under: its stem, as `import stem` would give,
    unless another module (say the standard library's) holds that name already."""
    taken = sys.modules.get(path.stem)
    if taken is None or Path(getattr(taken, "__file__", None) or "").resolve() == path:
        return path.stem
    import hashlib

    return f"flowlib_pipeline_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


# module name -> file of every pipeline this process loaded (local workers import them as they start)
LOADED: dict[str, str] = {}


def load_module(path: str | os.PathLike[str], name: str | None = None) -> ModuleType:
    """Import the pipeline file at `path` (its folder first on sys.path, like `python file.py`)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise PipelineLoadError(f"{path}: no such pipeline file")
    name = name or module_name_for(file)
    existing = sys.modules.get(name)
    if (
        existing is not None
        and getattr(existing, "__file__", None)
        and Path(existing.__file__).resolve() == file
    ):
        return existing
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except FlowError as exc:
        sys.modules.pop(name, None)
        site = innermost_site(exc, file)
        message = _text(exc)
        if message is None:  # a FlowError subclass of the pipeline's own, whose str() fails
            raise PipelineLoadError(f"{site}: cannot load the pipeline: {one_line(exc)}") from None
        if not message.startswith(site.rpartition(":")[0] + ":"):  # say where, unless it already does
            exc.args = (f"{site}: {message}", *exc.args[1:])
        raise
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        where = call_site(exc.filename or str(file), exc.lineno or 0)
        raise PipelineLoadError(f"{where}: syntax error: {exc.msg}") from None
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PipelineLoadError(
            f"{innermost_site(exc, file)}: cannot load the pipeline: {one_line(exc)}"
        ) from None
    LOADED[name] = str(file)
    return module


def innermost_site(exc: BaseException, file: str | os.PathLike[str]) -> str:
    """Return file:line of the deepest traceback frame inside `file` (the file alone when none is)."""
    file = Path(file).resolve()
    site = call_site(str(file), 0).rsplit(":", 1)[0]
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == file:
            site = call_site(frame.filename, frame.lineno or 0)
    return site


def one_line(exc: BaseException) -> str:
    """Return `Type: message` on one line (the CLI prints errors as a single line)."""
    text = _text(exc)
    message = " ".join(text.split()) if text is not None else "(its message cannot be shown: str() fails)"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _text(exc: BaseException) -> str | None:
    """str(exc), or None when the exception's own __str__ raises or returns no string."""
    try:
        return str(exc)
    except Exception:
        return None


def workflows_in(module: ModuleType) -> dict[str, Workflow]:
    """Return the workflows a module defines (those imported from elsewhere only if it defines none)."""
    found = {name: value for name, value in vars(module).items() if isinstance(value, Workflow)}
    own = {name: wf for name, wf in found.items() if wf.fn.__module__ == module.__name__}
    return own or found


def select_workflow(path: str | os.PathLike[str], name: str | None = None) -> Workflow:
    """Load `path` and return its workflow `name` (optional when the file defines only one)."""
    module = load_module(path)
    available = workflows_in(module)
    if name is not None:
        if name not in available:
            listed = ", ".join(sorted(available)) or "none"
            raise PipelineLoadError(f"{path}: no workflow named '{name}'; workflows here: {listed}")
        return available[name]
    if not available:
        raise PipelineLoadError(f"{path}: defines no @workflow")
    if len(available) > 1:
        raise PipelineLoadError(
            f"{path}: defines several workflows ({', '.join(sorted(available))}); name one after the file"
        )
    return next(iter(available.values()))
