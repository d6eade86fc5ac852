"""Operator code fingerprints: what an operator's code depends on, and the digest of it all.

The digest covers the operator's normalized source, the same-project functions and
classes it reaches (transitively), the constants they read, the versions of the
packages they use, and the operator's `version`.
"""

from __future__ import annotations

import ast
import dataclasses
import dis
import hashlib
import importlib
import importlib.util
import inspect
import sys
import sysconfig
import types
from collections.abc import Callable, Mapping
from importlib.metadata import Distribution
from pathlib import Path

from flowlib.distributions import distribution_versions, providers
from flowlib.errors import WorkflowDefinitionError
from flowlib.hashing import UnhashableLiteral, encode, hash_labelled, literal_digest

# Source normalization --------------------------------------------------------------------------------


def find_project_root(pipeline_file: str | Path) -> Path:
    """Return the first folder upward from the file's holding flow.toml or pyproject.toml, else its folder."""
    start = Path(pipeline_file).resolve()
    if not start.is_dir():
        start = start.parent
    for folder in (start, *start.parents):
        if (folder / "flow.toml").is_file() or (folder / "pyproject.toml").is_file():
            return folder
    return start


def normalize_source(fn_or_class: object) -> str:
    """Return the source of a function or class without comments, docstrings, blank lines or layout.

    A function's decorators are dropped: they carry operator options, which are not code. When no
    source is available the text is a digest of the bytecode instead.
    """
    try:
        tree = _parse(inspect.getsource(fn_or_class))
    except (OSError, TypeError, SyntaxError):
        return _bytecode_text(fn_or_class)
    scopes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        if isinstance(node, scopes) and ast.get_docstring(node, clean=False) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    top = tree.body[0] if tree.body else tree
    if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)):
        top.decorator_list = []
    elif not isinstance(top, ast.ClassDef):
        top = tree  # a lambda: getsource gives the statement around it
    return ast.unparse(top)


def _parse(source: str) -> ast.Module:
    """Parse what `inspect.getsource` gives. Nested code is indented and may hold lines left of it (a
    comment at column 0), which `textwrap.dedent` cannot strip: as the body of an `if` they do not count."""
    if source[:1] not in (" ", "\t"):
        return ast.parse(source)
    return ast.Module(body=ast.parse("if 1:\n" + source).body[0].body, type_ignores=[])  # type: ignore[attr-defined]


def _bytecode_text(obj: object) -> str:
    if isinstance(obj, type):
        members = sorted(vars(obj).items())
        parts = [[n, _code_parts(f.__code__)] for n, f in members if isinstance(f, types.FunctionType)]
    elif isinstance(getattr(obj, "__code__", None), types.CodeType):
        parts = _code_parts(obj.__code__)
    else:
        parts = ["opaque", getattr(obj, "__qualname__", type(obj).__qualname__)]
    return f"<bytecode {hash_labelled(['bytecode', parts])}>"


def _code_parts(code: types.CodeType) -> list:
    consts = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            consts.append(_code_parts(const))
        else:
            try:
                consts.append(encode(const))
            except UnhashableLiteral:
                consts.append(repr(const))
    return [code.co_code, list(code.co_names), consts]


def _source_hash(obj: object) -> str:
    return hashlib.sha256(normalize_source(obj).encode()).hexdigest()


# Operator fingerprints -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """What an operator's code depends on, and the digest of it all."""

    digest: str
    qualname: str
    source_hash: str
    calls: dict[str, str]  # qualname of each same-project function/class reached -> source hash
    globals: dict[str, str]  # name as referenced ("SCALE", "helpers.SCALE") -> literal digest
    packages: dict[str, str]  # distribution -> version
    version: str

    def to_json(self) -> dict:
        """Return the fingerprint as a plain JSON-able dict (stored with cache entries, read by `flow why`)."""
        return dataclasses.asdict(self)


_FLOWLIB_DIR = Path(__file__).resolve().parent
_STDLIB_DIRS = tuple({Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")})
_LOADS = {"LOAD_GLOBAL", "LOAD_NAME"}
_DEREFS = {"LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FROM_DICT_OR_DEREF"}
_ATTRS = {"LOAD_ATTR", "LOAD_METHOD"}
_CONSTS = {"LOAD_CONST", "LOAD_SMALL_INT"}
_TRANSPARENT = {"CACHE", "EXTENDED_ARG", "NOP"}


def _file_kind(filename: str | None, root: Path) -> str:
    """Return "project", "flowlib" or "other" for the file a function, class or module comes from."""
    if not filename or filename.startswith("<"):
        return "other"
    path = Path(filename).resolve()
    if path.is_relative_to(_FLOWLIB_DIR):
        return "flowlib"
    if "site-packages" in path.parts or "dist-packages" in path.parts:
        return "other"
    if any(path.is_relative_to(d) for d in _STDLIB_DIRS):
        return "other"
    return "project" if path.is_relative_to(root) else "other"


def _operator_fn(obj: object) -> types.FunctionType | None:
    """Return the plain function of a flowlib Operator, else None."""
    try:
        if getattr(obj, "__flow_operator__", False) is True and isinstance(obj.fn, types.FunctionType):
            return obj.fn
    except Exception:  # arbitrary objects may raise anything from __getattr__
        pass
    return None


def _all_names(code: types.CodeType) -> frozenset[str]:
    nested = (_all_names(c) for c in code.co_consts if isinstance(c, types.CodeType))
    return frozenset(code.co_names).union(*nested)


def _merge(found: dict[str, set[str]]) -> dict[str, str]:
    # Two different objects seen under one name (a `load` in two modules) still count, as one entry.
    return {
        name: next(iter(ds)) if len(ds) == 1 else hash_labelled(["merged", sorted(ds)])
        for name, ds in sorted(found.items())
    }


class _Walker:
    """Collect what a function depends on, following same-project code transitively."""

    def __init__(self, root: Path, caches: Fingerprinter) -> None:
        self.root = root
        self.caches = caches
        self.calls: dict[str, set[str]] = {}
        self.globals: dict[str, set[str]] = {}
        self.packages: dict[str, str] = {}
        self.seen: set[int] = set()  # ids are safe here: every object walked stays alive until the end

    def function(self, fn: types.FunctionType) -> None:
        closure = {}
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
            try:
                closure[name] = cell.cell_contents
            except ValueError:  # a cell not assigned yet
                pass
        self.code(fn.__code__, fn.__globals__, closure, self.caches.all_names(fn.__code__))
        code = fn.__code__
        positional = code.co_varnames[: code.co_argcount]
        defaults = dict(zip(positional[::-1], (fn.__defaults__ or ())[::-1], strict=False))
        defaults.update(fn.__kwdefaults__ or {})
        for param, value in sorted(defaults.items()):  # evaluated outside the body, so not in its source
            self.ref(f"{fn.__qualname__}({param}=...)", value)

    def code(self, code: types.CodeType, namespace: dict, closure: dict, names: frozenset[str]) -> None:
        chain = None  # (dotted name, module) while attribute loads follow a project module
        consts = (None, None)
        for ins in dis.get_instructions(code):
            op, arg = ins.opname, ins.argval
            if op in _TRANSPARENT:
                continue
            if op in _ATTRS and chain is not None:
                dotted, module = f"{chain[0]}.{arg}", chain[1]
                chain = None
                if arg in vars(module):
                    value = vars(module)[arg]
                    self.ref(dotted, value)
                    if isinstance(value, types.ModuleType) and self.kind(value) == "project":
                        chain = (dotted, value)
                continue
            chain = None
            if op in _CONSTS:
                consts = (consts[1], arg)
            elif op == "IMPORT_NAME":  # preceded by the constants `level` and `fromlist`
                self.local_import(arg, consts[0] if isinstance(consts[0], int) else 0, namespace, names)
            elif (op in _LOADS and arg in namespace) or (op in _DEREFS and arg in closure):
                value = namespace[arg] if op in _LOADS else closure[arg]
                self.ref(arg, value)
                if isinstance(value, types.ModuleType) and self.kind(value) == "project":
                    chain = (arg, value)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self.code(const, namespace, closure, names)

    def local_import(self, name: str, level: int, namespace: dict, names: frozenset[str]) -> None:
        # An import inside a function binds a local we do not track, so every attribute name the
        # function uses that the module has counts as referenced: more invalidation, never less.
        if level:
            try:
                name = importlib.util.resolve_name("." * level + name, namespace.get("__package__"))
            except (ImportError, ValueError):
                return
        module = sys.modules.get(name)
        if module is None:
            top = name.partition(".")[0]
            try:  # a top-level name: finding it imports nothing
                spec = None if top in sys.stdlib_module_names else importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
            where = spec and (spec.origin or next(iter(spec.submodule_search_locations or ()), None))
            if self.caches.file_kind(where) != "project":
                self.module(name)  # known by name: never import third-party code to fingerprint it
                return
            try:
                module = importlib.import_module(name)  # project code, as the operator itself will
            except Exception:
                return
        self.ref(name, module)
        if self.kind(module) == "project":
            for attr in sorted(names & vars(module).keys()):
                self.ref(f"{name}.{attr}", vars(module)[attr])

    def kind(self, obj: object) -> str:
        if isinstance(obj, types.FunctionType):
            return self.caches.file_kind(obj.__code__.co_filename)
        if isinstance(obj, types.ModuleType):
            return self.caches.file_kind(getattr(obj, "__file__", None))
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        if getattr(module, "__file__", None) is None and isinstance(obj, type):
            methods = [f for f in vars(obj).values() if isinstance(f, types.FunctionType)]
            return self.kind(methods[0]) if methods else "other"
        return self.caches.file_kind(getattr(module, "__file__", None))

    def module(self, module_name: str) -> None:
        self.packages.update(self.caches.distribution_versions(module_name))

    def ref(self, name: str, obj: object) -> None:
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        if isinstance(obj, types.ModuleType):
            if self.kind(obj) != "project":
                self.module(obj.__name__)
            return
        obj = _operator_fn(obj) or obj
        if not isinstance(obj, type) and callable(obj):
            try:
                obj = inspect.unwrap(obj)  # functools.wraps decorators, lru_cache
            except Exception:
                pass
        if isinstance(obj, (types.FunctionType, type)):
            kind = self.kind(obj)
            if kind == "project":
                self.project(obj)
            elif isinstance(getattr(obj, "__module__", None), str):
                self.module("flowlib" if kind == "flowlib" else obj.__module__)
            return
        try:
            digest = literal_digest(obj)
        except (UnhashableLiteral, RecursionError):
            digest = None  # a logger, a client, a model: not a constant
        if digest is not None:
            self.globals.setdefault(name, set()).add(digest)
        if type(obj).__module__ != "builtins":
            self.ref(name, type(obj))

    def project(self, obj: types.FunctionType | type) -> None:
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        self.calls.setdefault(obj.__qualname__, set()).add(self.caches.source_hash(obj))
        if isinstance(obj, types.FunctionType):
            self.function(obj)
            return
        for base in obj.__bases__:
            self.ref(base.__qualname__, base)
        for member in vars(obj).values():
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            targets = (member.fget, member.fset, member.fdel) if isinstance(member, property) else (member,)
            for target in targets:
                own = getattr(target, "__qualname__", "").startswith(f"{obj.__qualname__}.")
                if isinstance(target, types.FunctionType) and own:
                    if self.kind(target) == "project":  # not the generated __init__ of a dataclass
                        self.function(target)  # its source is part of the class's
                elif isinstance(target, (types.FunctionType, type)):
                    self.ref(target.__qualname__, target)


class Fingerprinter:
    """Fingerprints of one compile: what it has worked out once (a function's source hash,
    which files are project code, installed package versions) is kept for that compile only,
    so a long-lived process never answers from what was true before a file or package changed."""

    def __init__(self, project_root: str | Path) -> None:
        self.root = Path(project_root).resolve()
        self._fingerprints: dict[tuple[int, str], Fingerprint] = {}
        self._sources: dict[int, str] = {}
        self._kinds: dict[str | None, str] = {}
        self._names: dict[types.CodeType, frozenset[str]] = {}
        self._versions: dict[str, tuple[tuple[str, str], ...]] = {}
        self._installed_providers: Mapping[str, list[Distribution]] | None = None
        self._alive: list[object] = []  # what the id()-keyed caches saw, kept alive as long as they are

    def of(self, fn: Callable, *, version: str | None) -> Fingerprint:
        """Fingerprint an operator: its source, the project code it reaches, their constants and
        packages, `version`."""
        fn = _operator_fn(fn) or fn
        fn = inspect.unwrap(fn)
        if not isinstance(fn, types.FunctionType):
            raise WorkflowDefinitionError(f"cannot fingerprint {fn!r}: an operator must be a plain function")
        key = (id(fn), version or "")
        found = self._fingerprints.get(key)
        if found is None:
            self._alive.append(fn)
            found = self._fingerprints[key] = self._compute(fn, version or "")
        return found

    def _compute(self, fn: types.FunctionType, version: str) -> Fingerprint:
        walker = _Walker(self.root, self)
        walker.seen.add(id(fn))
        walker.function(fn)
        source = normalize_source(fn)
        calls, constants = _merge(walker.calls), _merge(walker.globals)
        packages = dict(sorted(walker.packages.items()))
        parts = [["calls", sorted(calls.items())], ["globals", sorted(constants.items())]]
        parts += [["packages", sorted(packages.items())], ["version", version]]
        digest = hash_labelled(["op", fn.__qualname__, source, *parts])
        source_hash = hashlib.sha256(source.encode()).hexdigest()
        return Fingerprint(digest, fn.__qualname__, source_hash, calls, constants, packages, version)

    def source_hash(self, obj: object) -> str:
        found = self._sources.get(id(obj))
        if found is None:
            self._alive.append(obj)
            found = self._sources[id(obj)] = _source_hash(obj)
        return found

    def file_kind(self, filename: str | None) -> str:
        found = self._kinds.get(filename)
        if found is None:
            found = self._kinds[filename] = _file_kind(filename, self.root)
        return found

    def all_names(self, code: types.CodeType) -> frozenset[str]:
        found = self._names.get(code)
        if found is None:
            found = self._names[code] = _all_names(code)
        return found

    def distribution_versions(self, module_name: str) -> tuple[tuple[str, str], ...]:
        found = self._versions.get(module_name)
        if found is None:
            found = self._versions[module_name] = distribution_versions(module_name, self._installed)
        return found

    def _installed(self) -> Mapping[str, list[Distribution]]:
        if self._installed_providers is None:  # once per compile, for a module neither stdlib nor flowlib
            self._installed_providers = providers()
        return self._installed_providers


def operator_fingerprint(fn: Callable, *, version: str | None, project_root: str | Path) -> Fingerprint:
    """Fingerprint one operator afresh (see Fingerprinter, which a compile uses to share the work)."""
    return Fingerprinter(project_root).of(fn, version=version)


def diff_fingerprints(old: dict, new: dict) -> list[str]:
    """Return why two fingerprints (as `Fingerprint.to_json()` dicts) differ, one reason a line; [] if equal."""
    if old.get("digest") == new.get("digest"):
        return []
    reasons = []
    if (old.get("qualname"), old.get("source_hash")) != (new.get("qualname"), new.get("source_hash")):
        reasons.append(f"code changed: {new.get('qualname')}")
    for key, template in (("calls", "code changed: {}"), ("globals", "constant changed: {}")):
        before, after = old.get(key) or {}, new.get(key) or {}
        reasons += [
            template.format(n) for n in sorted(before.keys() | after.keys()) if before.get(n) != after.get(n)
        ]
    before, after = old.get("packages") or {}, new.get("packages") or {}
    for dist in sorted(before.keys() | after.keys()):
        if before.get(dist) != after.get(dist):
            reasons.append(f"package changed: {dist} {before.get(dist, 'none')} -> {after.get(dist, 'none')}")
    if (old.get("version") or "") != (new.get("version") or ""):
        reasons.append(f"version changed: {old.get('version') or 'none'} -> {new.get('version') or 'none'}")
    return reasons or ["fingerprint changed"]  # e.g. entries made by an older hashing scheme
