"""Property tests (Hypothesis) for `-p` parameters parsed by annotation (flowlib.params): generated
values come back as written, type for type; generated junk is one clean ParameterError line.

flow.toml is in test_properties_config.py, literal hashing and plans in test_properties_values.py,
fingerprints in test_properties_fingerprint.py; the fuzz targets are in benchmarks/fuzz.py.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import FAST, json_floats, json_values, words

from flowlib import typecheck
from flowlib.errors import ParameterError
from flowlib.files import File
from flowlib.hashing import literal_digest
from flowlib.loading import select_workflow
from flowlib.params import _hint, convert, parse_params, read_params_file, split_assignments
from flowlib.workflows import Workflow

PIPELINE = """
import enum
from pathlib import Path
from typing import Any, Literal, Optional

from flowlib import File, operator, workflow


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = 2


@operator
def echo(value: Any) -> Any:
    return value


@workflow
def typed(
    n: int = 1,
    lr: float = 0.1,
    flag: bool = False,
    name: str = "x",
    out: Path = Path("out"),
    data: File = None,
    sizes: list[int] = [],
    scales: list[float] = [],
    opts: dict[str, float] = {},
    nested: dict[str, list[float]] = {},
    pair: tuple[int, str] = (0, ""),
    floats: tuple[float, ...] = (),
    limit: Optional[int] = None,
    label: Optional[str] = None,
    ratio: float | None = None,
    choice: Literal["sgd", "adam", "1"] = "sgd",
    level: Literal[1, 2, 3] = 1,
    mode: Mode = Mode.FAST,
    loose: Any = None,
    default_typed=3,
) -> Any:
    return echo(n)
"""


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workflow]:
    folder = tmp_path_factory.mktemp("params")
    (folder / "flow.toml").write_text("")
    (folder / "props_params.py").write_text(PIPELINE)
    path_before = list(sys.path)
    yield select_workflow(folder / "props_params.py")
    sys.modules.pop("props_params", None)
    sys.path[:] = path_before


# -- -p values by annotation ---------------------------------------------------------------------------

finite = st.floats(allow_nan=False)
path_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00~"), min_size=1)


def _spaced(text: str) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " ", "\n"])).map(
        lambda pad: pad[0] + text + pad[1]
    )


def _bool_text(value: bool) -> st.SearchStrategy[str]:
    spellings = ["true", "1", "yes", "on"] if value else ["false", "0", "no", "off"]
    return st.sampled_from(spellings).map(lambda s: "".join(c.upper() if c in "aeiou" else c for c in s))


def _json(value: Any) -> st.SearchStrategy[str]:
    return st.sampled_from([None, 2]).map(lambda indent: json.dumps(value, indent=indent))


def _loose_numbers(value: Any) -> Any:
    """`value` with its whole floats written as ints (`[1, 2]` for `[1.0, 2.0]`), as people type them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 and math.copysign(1, value) > 0:
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_loose_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _loose_numbers(v) for k, v in value.items()}
    return value


# parameter -> (values, how a user writes one); parse(text) must give the value back, type for type
ROUND_TRIPS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], st.SearchStrategy[str]]]] = {
    "n": (st.integers(), lambda v: _spaced(str(v))),
    "lr": (st.floats(), lambda v: _spaced(repr(v))),
    "flag": (st.booleans(), _bool_text),
    "name": (words, st.just),
    "out": (path_text.map(Path), lambda v: st.just(str(v))),
    "sizes": (st.lists(st.integers()), _json),
    "scales": (st.lists(json_floats), lambda v: _json(_loose_numbers(v))),
    "opts": (st.dictionaries(words, json_floats), lambda v: _json(_loose_numbers(v))),
    "nested": (st.dictionaries(words, st.lists(json_floats)), lambda v: _json(_loose_numbers(v))),
    "pair": (st.tuples(st.integers(), words), lambda v: _json(list(v))),
    "floats": (st.lists(json_floats).map(tuple), lambda v: _json(_loose_numbers(v))),
    "limit": (
        st.none() | st.integers(),
        lambda v: st.sampled_from(["none", "null", ""] if v is None else [str(v)]),
    ),
    "label": (
        st.none() | words.filter(lambda s: s.strip().lower() not in ("none", "null", "")),
        lambda v: st.just("None" if v is None else v),
    ),
    "ratio": (st.none() | st.floats(), lambda v: st.just("null" if v is None else repr(v))),
    "choice": (st.sampled_from(["sgd", "adam", "1"]), lambda v: st.sampled_from([v, json.dumps(v)])),
    "level": (st.sampled_from([1, 2, 3]), lambda v: _spaced(str(v))),
    "mode": (st.sampled_from(["FAST", "SLOW"]), lambda v: st.just(v)),  # by member name
    "loose": (json_values, _json),
    "default_typed": (st.integers(), lambda v: st.just(str(v))),
    "data": (path_text, st.just),  # relative to the pipeline's folder
}


@st.composite
def written(draw: st.DrawFn) -> tuple[str, Any, str]:
    name = draw(st.sampled_from(sorted(ROUND_TRIPS)))
    values, spell = ROUND_TRIPS[name]
    value = draw(values)
    return name, value, draw(spell(value))


@FAST
@given(written())
@example(("lr", 2.0, "2"))
@example(("scales", [1.0, 2.5], "[1, 2.5]"))
@example(("choice", "adam", "adam"))
@example(("level", 2, "2"))
def test_a_written_parameter_parses_back_to_its_value(typed: Workflow, case: tuple[str, Any, str]) -> None:
    name, value, text = case
    if name == "mode":
        value = getattr(sys.modules["props_params"].Mode, value)
    if name == "data":
        value = File(value, base=Path(typed.file).parent)
    parsed = parse_params(typed, split_assignments([f"{name}={text}"]))[name]
    if name == "data":
        assert parsed == value  # a File's digest is its content's: this one names no file
    else:  # the literal digest is the cache's own equality: types count (1 is not 1.0), NaN equals NaN
        assert literal_digest(parsed) == literal_digest(value), (parsed, value)
    assert typecheck.is_instance(parsed, _hint(typed, name))


@FAST
@given(st.sampled_from(sorted(ROUND_TRIPS)), words)
@example("n", "1" * 5000)
@example("sizes", "[" * 5000)
@example("loose", "[" * 50000)
@example("data", "~no_such_user_here/x.csv")
@example("data", "a\x00b")
@example("out", "a\x00b")
@example("choice", "momentum")
@example("mode", "fast")
def test_any_text_parses_to_a_fitting_value_or_one_clean_error(typed: Workflow, name: str, text: str) -> None:
    try:
        parsed = convert(typed, name, text)
    except ParameterError as exc:
        message = str(exc)
        assert "\n" not in message and f"parameter '{name}'" in message, message
        return
    assert typecheck.is_instance(parsed, _hint(typed, name)), (name, text, parsed)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(sorted(ROUND_TRIPS)),
        json_values | st.floats(),
    )
)
@example({"data": "~no_such_user_here/x.csv"})
@example({"scales": [1, 2]})
@example({"n": True})
@example({"lr": 10**400})
def test_params_file_values_are_coerced_or_refused_cleanly(typed: Workflow, values: dict[str, Any]) -> None:
    try:
        parsed = parse_params(typed, {}, values)
    except ParameterError as exc:
        assert "\n" not in str(exc)
        return
    for name, value in parsed.items():
        assert typecheck.is_instance(value, _hint(typed, name)), (name, value)
        if _hint(typed, name) in (int, float):  # 3, 3.0 and True hash apart: a float parameter is a float
            assert type(value) is _hint(typed, name), (name, value)


@FAST
@given(st.lists(words, max_size=4))
@example(["a\nb=1"])
def test_assignments_split_on_the_first_equals_or_fail_cleanly(typed: Workflow, items: list[str]) -> None:
    try:
        pairs = split_assignments(items)
        parse_params(typed, pairs)
    except ParameterError as exc:
        assert "\n" not in str(exc), str(exc)
        return
    for item in items:
        key, _, value = item.partition("=")
        assert pairs[key.strip()] == value


@FAST
@given(st.binary(), st.sampled_from([".json", ".toml", ".yaml"]))
@example(b"\xff\xfe", ".toml")
@example(b"[" * 100000, ".json")
def test_params_files_of_junk_are_refused_cleanly(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str
) -> None:
    path = tmp_path_factory.mktemp("pfile") / f"p{suffix}"
    path.write_bytes(data)
    try:
        loaded = read_params_file(path)
    except ParameterError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert isinstance(loaded, dict)


# -- regressions found by the properties above ---------------------------------------------------------


def test_a_file_parameter_under_an_unknown_users_home_is_a_parameter_error(typed: Workflow) -> None:
    with pytest.raises(ParameterError, match="parameter 'data'"):
        convert(typed, "data", "~no_such_user_here/x.csv")
    with pytest.raises(ParameterError, match="parameter 'data'"):
        parse_params(typed, {}, {"data": "~no_such_user_here/x.csv"})


def test_a_nul_byte_in_a_path_parameter_is_a_parameter_error(typed: Workflow) -> None:
    for name in ("out", "data"):
        with pytest.raises(ParameterError, match=f"parameter '{name}'"):
            convert(typed, name, "a\x00b")


def test_a_params_file_that_is_not_utf8_is_a_parameter_error(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ParameterError, match=r"p\.toml: cannot read the parameters file: not UTF-8"):
        read_params_file(tmp_path / "p.toml")


def test_deeply_nested_json_is_a_parameter_error(typed: Workflow) -> None:
    with pytest.raises(ParameterError, match="parameter 'sizes'"):
        convert(typed, "sizes", "[" * 5000)
    with pytest.raises(ParameterError, match="parameter 'loose'"):
        convert(typed, "loose", "[" * 50000 + "]" * 50000)


def test_whole_numbers_in_float_containers_become_floats(typed: Workflow) -> None:
    parsed = parse_params(typed, {"scales": "[1, 2.5]", "nested": '{"a": [1]}', "floats": "[3]"})
    assert parsed == {"scales": [1.0, 2.5], "nested": {"a": [1.0]}, "floats": (3.0,)}
    assert [type(x) for x in parsed["scales"]] == [float, float]
    assert literal_digest(parsed["scales"]) == literal_digest([1.0, 2.5])
    from_file = parse_params(typed, {}, {"opts": {"a": 1}, "ratio": 2})
    assert type(from_file["opts"]["a"]) is float and type(from_file["ratio"]) is float


def test_literal_and_enum_parameters_take_their_plain_text(typed: Workflow) -> None:
    mode = sys.modules["props_params"].Mode
    assert convert(typed, "choice", "adam") == "adam"
    assert convert(typed, "choice", '"adam"') == "adam"
    assert convert(typed, "choice", "1") == "1"  # the string member, not the number
    assert convert(typed, "level", "2") == 2
    assert convert(typed, "mode", "SLOW") is mode.SLOW
    assert convert(typed, "mode", "fast") is mode.FAST  # by value when no name matches
    with pytest.raises(ParameterError, match=r"'momentum'.*one of 'sgd', 'adam', '1'"):
        convert(typed, "choice", "momentum")
    with pytest.raises(ParameterError, match="one of FAST, SLOW"):
        convert(typed, "mode", "medium")


def test_unknown_parameter_names_are_shown_on_one_line(typed: Workflow) -> None:
    with pytest.raises(ParameterError) as info:
        parse_params(typed, {"a\nb": "1"})
    assert "\n" not in str(info.value) and "'a\\nb'" in str(info.value)


def test_a_params_file_boolean_or_huge_number_for_a_number_is_a_parameter_error(typed: Workflow) -> None:
    with pytest.raises(ParameterError, match="parameter 'n': expected int, got True"):
        parse_params(typed, {}, {"n": True})
    with pytest.raises(ParameterError, match="parameter 'lr': a whole number of 401 digits is too large"):
        parse_params(typed, {}, {"lr": 10**400})
    with pytest.raises(ParameterError, match="parameter 'scales'"):
        convert(typed, "scales", "[" + "9" * 400 + "]")
