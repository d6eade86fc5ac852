"""Property tests (Hypothesis) for flow.toml and [tool.flow] (flowlib.config): a generated valid
configuration loads to the values written; generated junk (any TOML table, wrong types, unknown keys,
any bytes) loads or is one ConfigError line naming the file, never another exception."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import FAST, words

from flowlib import config
from flowlib.errors import ConfigError


def _toml_str(text: str) -> str:
    escaped = "".join(
        "\\\\"
        if c == "\\"
        else '\\"'
        if c == '"'
        else f"\\u{ord(c):04x}"
        if ord(c) < 0x20 or c == "\x7f"
        else c
        for c in text
    )
    return f'"{escaped}"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)  # repr: 1.0, 1e+16, inf, -inf
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return "{" + ", ".join(f"{_toml_str(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def toml(table: dict[str, Any], prefix: str = "") -> str:
    """A TOML document for `table`: its scalars, then one [header] per sub-table."""
    lines = [f"{_toml_str(k)} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            header = f"{prefix}.{_toml_str(key)}" if prefix else _toml_str(key)
            lines += ["", f"[{header}]", toml(value, header)]
    return "\n".join(lines)


relative = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00/~"), min_size=1).map(
    lambda s: "data/" + s
)
toml_floats = st.floats(allow_nan=False)
seconds = st.integers(0, 10**6) | st.floats(0, 10**6)
flow_tables = st.fixed_dictionaries(
    {},
    optional={
        "home": relative,
        "db": relative.map(lambda p: "sqlite:///" + p) | st.just("postgresql+psycopg://u@db.example/flow"),
        "artifacts": relative | st.just("s3://bucket/artifacts"),
        "executor": st.sampled_from(["local", "inline", "gpu", "ssh", "ray", "plugin"]),
        "fsync": st.booleans(),
        "db_outage_seconds": seconds,
    },
)
executor_tables = st.fixed_dictionaries(
    {},
    optional={
        "local": st.fixed_dictionaries(
            {}, optional={"workers": st.integers(1, 64), "start": st.sampled_from(["fork", "spawn"])}
        ),
        "gpu": st.fixed_dictionaries(
            {}, optional={"workers": st.integers(1, 8), "devices": st.lists(st.integers(0, 7))}
        ),
        "ssh": st.fixed_dictionaries(
            {},
            optional={
                "hosts": st.lists(words, max_size=3),
                "identity_file": relative,
                "python": words.filter(lambda s: "\x00" not in s),
                "slots": st.integers(1, 8),
            },
        ),
        "ray": st.fixed_dictionaries(
            {},
            optional={
                "address": words,
                "num_cpus": st.integers(0, 64),
                "resources": st.dictionaries(words, toml_floats, max_size=3),
            },
        ),
        "plugin": st.dictionaries(words, st.integers() | words | st.booleans(), max_size=3),
    },
)
server_tables = st.fixed_dictionaries(
    {},
    optional={
        "token": words,
        "lease_seconds": seconds,
        "drain_seconds": seconds,
        "max_runs": st.integers(1, 100),
    },
)
valid_tables = st.fixed_dictionaries(
    {}, optional={"flow": flow_tables, "executors": executor_tables, "server": server_tables}
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Path]]:
    made = iter(range(10**9))
    yield lambda: tmp_path_factory.mktemp(f"cfg{next(made)}")


@FAST
@given(valid_tables, st.booleans())
def test_a_written_configuration_loads_to_its_values(
    folders: Callable[[], Path], table: dict[str, Any], in_pyproject: bool
) -> None:
    folder = folders()
    if in_pyproject:  # [tool.flow] holds the [flow] keys itself
        flat = {**table.get("flow", {}), **{k: v for k, v in table.items() if k != "flow"}}
        (folder / "pyproject.toml").write_text(toml({"tool": {"flow": flat}}))
    else:
        (folder / "flow.toml").write_text(toml(table))
    loaded = config.load(folder, environ={})
    flow = table.get("flow", {})
    rel = lambda key, default: str(folder.resolve() / flow.get(key, default))  # noqa: E731
    assert loaded.source == str(folder.resolve() / ("pyproject.toml" if in_pyproject else "flow.toml"))
    assert str(loaded.home) == rel("home", ".flow")
    assert loaded.artifacts == (
        flow["artifacts"]
        if "://" in flow.get("artifacts", "")
        else rel("artifacts", f"{loaded.home}/artifacts")
    )
    db = flow.get("db", f"sqlite:///{loaded.home}/flow.db")
    if db.startswith("sqlite:///data/"):  # a relative SQLite file lies beside the configuration
        db = "sqlite:///" + str(folder.resolve() / db.removeprefix("sqlite:///"))
    assert loaded.db == db
    assert (loaded.executor, loaded.fsync) == (flow.get("executor", "local"), flow.get("fsync", True))
    assert loaded.db_outage_s == float(flow.get("db_outage_seconds", 60.0))
    expected = {name: dict(settings) for name, settings in table.get("executors", {}).items()}
    if "identity_file" in expected.get("ssh", {}):
        expected["ssh"]["identity_file"] = str(folder.resolve() / expected["ssh"]["identity_file"])
    assert loaded.executors == expected
    assert loaded.server == {**config.SERVER_DEFAULTS, **table.get("server", {})}


junk_values = st.recursive(
    st.booleans() | st.integers() | st.floats() | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=8,
)
known_names = st.sampled_from(
    [
        "flow",
        "executors",
        "server",
        "local",
        "ssh",
        "gpu",
        "ray",
        "home",
        "db",
        "workers",
        "hosts",
        "host",
        "token",
        "fsync",
        "tool",
        "db_outage_seconds",
        "lease_seconds",
        "start",
    ]
)
junk_tables = st.recursive(
    st.dictionaries(known_names | words, junk_values, max_size=4),
    lambda inner: st.dictionaries(known_names | words, inner | junk_values, max_size=4),
    max_leaves=10,
)


def _loads_or_refuses(folder: Path, name: str, environ: dict[str, str] | None = None) -> config.Config | None:
    try:
        loaded = config.load(folder, environ=environ or {})
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message, message
        assert str(folder.resolve() / name) in message or "FLOW_HOME" in message, message
        return None
    for place in (loaded.home, loaded.artifacts, loaded.db.removeprefix("sqlite:///")):
        try:  # every path it hands on is one the OS can be asked about
            Path(place).exists()
        except OSError:
            pass
    return loaded


@FAST
@given(junk_tables, st.booleans())
@example({"tool": 1}, True)
@example({"tool": {"flow": [1]}}, True)
@example({"flow": {"home": "~no_such_user_here/x"}}, False)
@example({"flow": {"db": "sqlite:///~no_such_user_here/x.db"}}, False)
@example({"executors": {"ssh": {"known_hosts": "~no_such_user_here/k"}}}, False)
@example({"flow": {"home": "a\x00b"}}, False)
@example({"flow\n2": {}}, False)
@example({"flow": {"x\ny": 1}}, False)
def test_any_toml_table_loads_or_is_one_config_error(
    folders: Callable[[], Path], table: dict[str, Any], in_pyproject: bool
) -> None:
    folder = folders()
    name = "pyproject.toml" if in_pyproject else "flow.toml"
    (folder / name).write_text(
        toml(
            table
            if in_pyproject and "tool" in table
            else {"tool": {"flow": table}}
            if in_pyproject
            else table
        )
    )
    _loads_or_refuses(folder, name)


@FAST
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode), st.booleans())
@example(b"\xff", False)
@example(b"[flow]\nhome = 'x'\n[flow]\n", False)
def test_any_bytes_as_flow_toml_load_or_are_one_config_error(
    folders: Callable[[], Path], data: bytes, in_pyproject: bool
) -> None:
    folder = folders()
    name = "pyproject.toml" if in_pyproject else "flow.toml"
    (folder / name).write_bytes(data)
    _loads_or_refuses(folder, name)


schema_keys = st.sampled_from(
    sorted((section, key) for section, keys in config._SCHEMA.items() for key in keys)
)
odd_numbers = st.sampled_from([10**400, -(10**400), 2**63, -1, 0]) | st.floats()


@FAST
@given(schema_keys, junk_values | odd_numbers)
@example(("flow", "db_outage_seconds"), 10**400)
@example(("server", "lease_seconds"), math.nan)
def test_any_value_for_a_known_key_loads_or_is_one_config_error(
    folders: Callable[[], Path], place: tuple[str, str], value: object
) -> None:
    section, key = place
    *outer, inner = section.split(".")
    table: dict[str, Any] = {inner: {key: value}}
    for name in reversed(outer):
        table = {name: table}
    folder = folders()
    (folder / "flow.toml").write_text(toml(table))
    _loads_or_refuses(folder, "flow.toml")


def test_a_number_of_seconds_that_is_no_number_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "flow.toml").write_text(f"[flow]\ndb_outage_seconds = {10**400}\n")
    with pytest.raises(ConfigError, match="key 'db_outage_seconds' in \\[flow\\] must be a number"):
        config.load(tmp_path, environ={})
    (tmp_path / "flow.toml").write_text("[server]\nlease_seconds = nan\n")
    with pytest.raises(ConfigError, match="key 'lease_seconds' in \\[server\\] must be a number, got nan"):
        config.load(tmp_path, environ={})


def test_an_unknown_users_home_in_configuration_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "flow.toml").write_text('[flow]\nhome = "~no_such_user_here/flow"\n')
    with pytest.raises(
        ConfigError, match=r"flow.toml \[flow\] home: no home folder for '~no_such_user_here'"
    ):
        config.load(tmp_path, environ={})
    (tmp_path / "flow.toml").write_text("")
    with pytest.raises(ConfigError, match="FLOW_HOME: no home folder"):
        config.load(tmp_path, environ={"FLOW_HOME": "~no_such_user_here"})


def test_a_tool_table_that_is_not_a_table_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool]\nflow = [1]\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: \[tool.flow\] must be a table"):
        config.load(tmp_path, environ={})
    (tmp_path / "pyproject.toml").write_text("tool = 1\n")  # no [tool.flow]: not flowlib's file
    assert config.load(tmp_path, environ={}).source is None


def test_a_nul_character_in_a_configured_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "flow.toml").write_text('[flow]\nartifacts = "a\\u0000b"\n')
    with pytest.raises(ConfigError, match="key 'artifacts' in \\[flow\\] holds a NUL character"):
        config.load(tmp_path, environ={})


def test_unknown_names_in_configuration_errors_stay_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "flow.toml").write_text('[flow]\n"x\\ny" = 1\n')
    with pytest.raises(ConfigError, match=r"unknown key 'x\\ny' in \[flow\]"):
        config.load(tmp_path, environ={})
    (tmp_path / "flow.toml").write_text('["flow\\n2"]\n')
    with pytest.raises(ConfigError, match=r"unknown section \['flow\\n2'\]"):
        config.load(tmp_path, environ={})
