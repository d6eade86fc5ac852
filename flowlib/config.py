"""Configuration: flow.toml (or [tool.flow] in pyproject.toml) < environment < CLI flags."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowlib.errors import ConfigError

# section -> key -> accepted types; an executor section not listed accepts any keys (plugins).
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "flow": {
        "home": (str,),
        "db": (str,),
        "artifacts": (str,),
        "executor": (str,),
        "fsync": (bool,),
        "db_outage_seconds": (int, float),
    },
    "executors.local": {"workers": (int,), "start": (str,)},  # start: "fork" (warm, default) or "spawn"
    "executors.inline": {},
    "executors.gpu": {"workers": (int,), "devices": (list,), "start": (str,)},
    "executors.ssh": {
        "hosts": (list,),
        "host": (list,),  # [[executors.ssh.host]] tables: address, labels, gpu_type, gpus, slots
        "identity_file": (str,),
        "known_hosts": (str,),
        "python": (str,),
        "workdir": (str,),
        "slots": (int,),
    },
    "executors.ray": {"address": (str,), "num_cpus": (int,), "num_gpus": (int,), "resources": (dict,)},
    "server": {
        "token": (str,),  # a client's token for `--server` (FLOW_TOKEN beats it)
        "lease_seconds": (int, float),
        "drain_seconds": (int, float),
        "max_code_mb": (int, float),
        "max_runs": (int,),
    },
}
SERVER_DEFAULTS: dict[str, Any] = {"lease_seconds": 15, "drain_seconds": 30, "max_code_mb": 50, "max_runs": 4}


@dataclass
class Config:
    """Resolved settings; `source` names the file they came from (for error messages)."""

    home: Path
    db: str
    artifacts: str
    executor: str = "local"
    fsync: bool = True
    db_outage_s: float = 60.0  # how long a scheduler waits for a database that stopped answering
    executors: dict[str, dict[str, Any]] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=lambda: dict(SERVER_DEFAULTS))  # the [server] table
    source: str | None = None
    origins: dict[str, str] = field(default_factory=dict)  # "db" -> where its value came from

    def origin(self, key: str) -> str:
        """Where a setting came from, for error messages ("FLOW_DB_URL", "flow.toml [flow] db", ...)."""
        return self.origins.get(key, "the default")

    def executor_settings(self, name: str) -> dict[str, Any]:
        settings = dict(self.executors.get(name, {}))
        if name == "gpu" and "workers" not in settings and "workers" in self.executors.get("local", {}):
            settings["workers"] = self.executors["local"]["workers"]  # local's workers sizes both pools
        return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from None


def find_file(folder: Path) -> tuple[Path | None, dict[str, Any]]:
    """Return the configuration file in `folder` and its flowlib table (empty when none)."""
    flow_toml = folder / "flow.toml"
    if flow_toml.is_file():
        return flow_toml, _read_toml(flow_toml)
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool", {})
        table = tool.get("flow") if isinstance(tool, dict) else None
        if table is not None:
            if not isinstance(table, dict):
                raise ConfigError(f"{pyproject}: [tool.flow] must be a table, got {table!r}")
            # [tool.flow] holds the [flow] keys itself (`[tool.flow.flow]` works too)
            scalars = {key: value for key, value in table.items() if not isinstance(value, dict)}
            sections = {key: value for key, value in table.items() if isinstance(value, dict)}
            if scalars:
                sections["flow"] = {**scalars, **sections.get("flow", {})}
            return pyproject, sections
    return None, {}


def project_root(folder: Path) -> Path:
    """The first folder upward from `folder` holding flow.toml or pyproject.toml, else `folder`:
    where `.flow` lives by default, whichever subfolder a command runs from."""
    for candidate in (folder, *folder.parents):
        if (candidate / "flow.toml").is_file() or (candidate / "pyproject.toml").is_file():
            return candidate
    return folder


def _validate(path: Path, table: dict[str, Any]) -> None:
    prefix = "tool.flow." if path.name == "pyproject.toml" else ""
    for section, values in table.items():
        if section == "executors" and isinstance(values, dict):
            for name, settings in values.items():
                _check_section(path, f"{prefix}executors.{_shown(name)}", f"executors.{name}", settings)
            continue
        if section not in ("flow", "server"):
            raise ConfigError(
                f"{path}: unknown section [{prefix}{_shown(section)}]; known: [flow], [executors.NAME], [server]"
            )
        shown = "tool.flow" if prefix and section == "flow" else f"{prefix}{section}"
        _check_section(path, shown, section, values)


def _check_section(path: Path, shown: str, section: str, values: Any) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: [{shown}] must be a table")
    schema = _SCHEMA.get(section)
    if schema is None:
        return
    for key, value in values.items():
        if key not in schema:
            known = ", ".join(schema) or "none"
            raise ConfigError(f"{path}: unknown key {key!r} in [{shown}]; known keys: {known}")
        types = schema[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ConfigError(f"{path}: key '{key}' in [{shown}] must be {types[0].__name__}, got {value!r}")
        if float in types and not _a_number(value):  # NaN, or a whole number too large for a float
            raise ConfigError(f"{path}: key '{key}' in [{shown}] must be a number, got {value!r}")
        if (section, key) in _PATHS and "\x00" in value:
            raise ConfigError(f"{path}: key '{key}' in [{shown}] holds a NUL character: {value!r}")


# the keys whose values are paths (or URLs holding one)
_PATHS = {("flow", "home"), ("flow", "db"), ("flow", "artifacts")}
_PATHS |= {("executors.ssh", key) for key in ("identity_file", "known_hosts", "workdir", "python")}


def _a_number(value: float) -> bool:
    try:
        return not math.isnan(value)
    except OverflowError:
        return False


def _shown(name: str) -> str:
    """A section name as an error shows it: quoted when it would break the line or the brackets."""
    return name if name.isprintable() and not set(name) & set("[]'\"") else repr(name)


def _expanded(path: Path, where: str) -> Path:
    """`path` with a leading `~` or `~user` expanded; an unknown user is a ConfigError naming `where`."""
    try:
        return path.expanduser()
    except RuntimeError:  # no home folder for that user
        raise ConfigError(f"{where}: no home folder for {path.parts[0]!r} in {str(path)!r}") from None


def _relative_to(base: Path, value: str, where: str) -> str:
    if "://" in value:
        return value
    path = _expanded(Path(value), where)
    return str(path if path.is_absolute() else (base / path))


def _sqlite_relative(base: Path, url: str, where: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return prefix + _relative_to(base, url[len(prefix) :], where)
    return url


def load(
    folder: Path | None = None,
    *,
    db: str | None = None,
    executor: str | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Resolve the configuration for `folder` (default: the working folder)."""
    folder = (folder or Path.cwd()).resolve()
    env = os.environ if environ is None else environ
    path, table = find_file(folder)
    root = project_root(folder)
    if path is None and root != folder:  # in a subfolder of a project: its configuration
        path, table = find_file(root)
    if path is not None:
        _validate(path, table)
    base = path.parent if path is not None else root
    flow = dict(table.get("flow", {}))
    section = f"{path} [{'tool.flow' if path is not None and path.name == 'pyproject.toml' else 'flow'}]"
    if env.get("FLOW_HOME"):
        home = _expanded(Path(env["FLOW_HOME"]), "FLOW_HOME").resolve()
    else:
        home = Path(_relative_to(base, flow.get("home", ".flow"), f"{section} home"))
    db_url = (
        db
        or env.get("FLOW_DB_URL")
        or (_sqlite_relative(base, flow["db"], f"{section} db") if "db" in flow else None)
    )
    artifacts = env.get("FLOW_ARTIFACTS") or (
        _relative_to(base, flow["artifacts"], f"{section} artifacts") if "artifacts" in flow else None
    )

    def origin(key: str, flag: str | None, variable: str, fallback: str) -> str:
        if flag:
            return f"--{key}"
        if env.get(variable):
            return variable
        return f"{section} {key}" if key in flow else fallback

    origins = {
        "db": origin("db", db, "FLOW_DB_URL", "FLOW_HOME"),
        "artifacts": origin("artifacts", None, "FLOW_ARTIFACTS", "FLOW_HOME"),
        "executor": origin("executor", executor, "FLOW_EXECUTOR", "the default"),
    }
    executors = {name: dict(settings) for name, settings in table.get("executors", {}).items()}
    for name in ("ssh",):
        settings = executors.get(name, {})
        for key in ("identity_file", "known_hosts"):
            if key in settings:
                settings[key] = _relative_to(base, settings[key], f"{path} [executors.{name}] {key}")
    return Config(
        home=home,
        db=db_url or f"sqlite:///{home / 'flow.db'}",
        artifacts=artifacts or str(home / "artifacts"),
        executor=executor or env.get("FLOW_EXECUTOR") or flow.get("executor", "local"),
        fsync=flow.get("fsync", True),
        db_outage_s=float(flow.get("db_outage_seconds", 60.0)),
        executors=executors,
        server={**SERVER_DEFAULTS, **table.get("server", {})},
        source=str(path) if path else None,
        origins=origins,
    )
