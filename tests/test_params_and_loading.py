"""Loading pipeline files by path, finding their workflows, parsing parameters; `import flowlib` stays light."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from flowlib import WorkflowDefinitionError
from flowlib.errors import ParameterError, PipelineLoadError
from flowlib.loading import load_module, select_workflow, workflows_in
from flowlib.params import parse_params, read_params_file, split_assignments

PARAMS = """
from pathlib import Path
from typing import Any, Optional

from flowlib import operator, workflow


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
    sizes: list[int] = [1],
    opts: dict[str, float] = {},
    limit: Optional[int] = None,
    loose=3,
) -> Any:
    return echo([n, lr, flag, name, str(out), sizes, opts, limit, loose])
"""


@pytest.fixture
def typed(project):  # type: ignore[no-untyped-def]
    project.write("params.py", PARAMS)
    return select_workflow(project.root / "params.py")


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("n", "42", 42),
        ("n", "-3", -3),
        ("lr", "1e-3", 0.001),
        ("lr", "2", 2.0),
        ("flag", "true", True),
        ("flag", "Yes", True),
        ("flag", "1", True),
        ("flag", "false", False),
        ("flag", "off", False),
        ("name", "hello world", "hello world"),
        ("name", "123", "123"),
        ("out", "/tmp/data", Path("/tmp/data")),
        ("sizes", "[1, 2, 3]", [1, 2, 3]),
        ("opts", '{"a": 1.5, "b": 2}', {"a": 1.5, "b": 2}),
        ("limit", "none", None),
        ("limit", "7", 7),
        ("loose", "5", 5),  # no annotation: the default's type
    ],
)
def test_parameters_are_parsed_by_annotation(typed, name, text, value) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_params(typed, split_assignments([f"{name}={text}"]))
    assert parsed == {name: value}
    assert type(parsed[name]) is type(value)
    typed.build(**parsed)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("n", "1.5"),
        ("n", "ten"),
        ("lr", "fast"),
        ("flag", "maybe"),
        ("sizes", "1,2"),
        ("sizes", '["a"]'),
        ("opts", "[1]"),
        ("limit", "many"),
    ],
)
def test_unparseable_values_name_workflow_parameter_and_value(project, typed, name, text) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError) as info:
        parse_params(typed, split_assignments([f"{name}={text}"]))
    message = str(info.value)
    assert "workflow 'typed'" in message and f"parameter '{name}'" in message and repr(text) in message


def test_parameter_errors_on_the_command_line(project, typed) -> None:  # type: ignore[no-untyped-def]
    project.fails("show", "params.py", "-p", "n=ten", expect=["parameter 'n'", "'ten'"])
    project.fails("show", "params.py", "-p", "colour=red", expect=["unknown", "colour", "n, lr, flag, name"])
    project.fails("show", "params.py", "-p", "novalue", expect=["NAME=VALUE"])


def test_a_missing_required_parameter_on_the_command_line(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def inc(x: int) -> int:
            return x + 1

        @workflow
        def w(n: int, step: int = 1) -> int:
            return inc(n)
        """,
    )
    project.fails(
        "show", "pipeline.py", expect=["missing required parameter(s) n", "valid parameters: n, step"]
    )
    project.fails("run", "pipeline.py", expect=["missing", "valid parameters: n, step"])
    assert project.flow("show", "pipeline.py", "-p", "n=2").code == 0


def test_params_files_json_and_toml_and_p_beats_the_file(project, typed) -> None:  # type: ignore[no-untyped-def]
    (project.root / "p.json").write_text(json.dumps({"n": 5, "lr": 3, "sizes": [4, 5], "out": "data"}))
    (project.root / "p.toml").write_text('n = 6\nflag = true\nopts = { a = 1.0 }\nlimit = 2\nname = "t"\n')
    from_json = parse_params(typed, {}, read_params_file(project.root / "p.json"))
    assert from_json == {"n": 5, "lr": 3.0, "sizes": [4, 5], "out": Path("data")}
    assert type(from_json["lr"]) is float  # as `-p lr=3` would give: the same literal digest either way
    from_toml = parse_params(typed, {}, read_params_file(project.root / "p.toml"))
    assert from_toml == {"n": 6, "flag": True, "opts": {"a": 1.0}, "limit": 2, "name": "t"}
    both = parse_params(typed, split_assignments(["n=9"]), read_params_file(project.root / "p.json"))
    assert both["n"] == 9 and both["sizes"] == [4, 5]

    shown = project.flow("show", "params.py", "--params-file", "p.json", "-p", "n=9", "--format", "json")
    assert shown.code == 0, str(shown)
    literal = shown.json()["nodes"][0]["inputs"]["value"]["literal"]
    assert literal[0] == 9 and literal[1] == 3.0 and literal[5] == [4, 5]
    shown = project.flow("show", "params.py", "--params-file", "p.toml", "--format", "json")
    assert shown.json()["nodes"][0]["inputs"]["value"]["literal"][0] == 6


def test_bad_params_files(project, typed) -> None:  # type: ignore[no-untyped-def]
    (project.root / "bad.json").write_text("{not json")
    (project.root / "list.json").write_text("[1, 2]")
    (project.root / "p.yaml").write_text("n: 1")
    (project.root / "unknown.toml").write_text("size = 3\n")
    (project.root / "wrong.json").write_text('{"n": "many"}')
    project.fails("show", "params.py", "--params-file", "bad.json", expect=["bad.json", "cannot parse"])
    project.fails("show", "params.py", "--params-file", "list.json", expect=["list.json"])
    project.fails("show", "params.py", "--params-file", "p.yaml", expect=[".json or .toml"])
    project.fails("show", "params.py", "--params-file", "missing.json", expect=["missing.json"])
    project.fails(
        "show", "params.py", "--params-file", "unknown.toml", expect=["size", "valid parameters: n, lr"]
    )
    project.fails("show", "params.py", "--params-file", "wrong.json", expect=["parameter 'n'", "many"])


# -- finding workflows ---------------------------------------------------------------------------------

ONE = """
from flowlib import operator, workflow

@operator
def inc(x: int) -> int:
    return x + 1

@workflow
def only(n: int = 1) -> int:
    return inc(n)
"""

TWO = (
    ONE
    + """
@workflow
def other(n: int = 1) -> int:
    return inc(inc(n))
"""
)


def test_a_file_with_one_workflow_needs_no_name(project) -> None:  # type: ignore[no-untyped-def]
    project.write("one.py", ONE)
    assert select_workflow(project.root / "one.py").name == "only"
    assert select_workflow("one.py", "only").name == "only"
    assert project.flow("show", "one.py").code == 0


def test_a_file_with_two_workflows_needs_a_name(project) -> None:  # type: ignore[no-untyped-def]
    project.write("two.py", TWO)
    with pytest.raises(PipelineLoadError, match=r"several workflows \(only, other\)"):
        select_workflow("two.py")
    assert select_workflow("two.py", "other").name == "other"
    project.fails("show", "two.py", expect=["two.py", "only, other"])
    project.fails("show", "two.py", "nope", expect=["no workflow named 'nope'", "only, other"])
    shown = project.flow("show", "two.py", "other", "--format", "json")
    assert shown.code == 0 and shown.json()["workflow"] == "other"


def test_workflows_imported_from_a_helper_module_are_found(project) -> None:  # type: ignore[no-untyped-def]
    project.write("shared_flows.py", ONE)
    project.write("pipeline.py", "from shared_flows import only\n")
    module = load_module(project.root / "pipeline.py")
    assert list(workflows_in(module)) == ["only"]
    assert project.flow("show", "pipeline.py").code == 0


def test_a_pipeline_may_share_its_name_with_a_standard_module(project) -> None:  # type: ignore[no-untyped-def]
    project.write("json.py", ONE)  # `import json` elsewhere must still get the standard library
    assert select_workflow(project.root / "json.py").name == "only"
    assert sys.modules["json"].__file__ != str(project.root / "json.py")


BROKEN = {
    "syntax.py": ("from flowlib import workflow\n\ndef f(:\n    pass\n", ["syntax.py:3", "syntax error"]),
    "missing_import.py": (
        "from flowlib import workflow\nimport numpy\nimport no_such_module_xyz\n",
        ["missing_import.py:3", "ModuleNotFoundError", "no_such_module_xyz"],
    ),
    "no_workflow.py": (
        "from flowlib import operator\n\n@operator\ndef f(x: int) -> int:\n    return x\n",
        ["no_workflow.py", "no @workflow"],
    ),
    "raises.py": (
        "from flowlib import workflow\n\nSIZE = int('12x')\n",
        ["raises.py:3", "ValueError", "12x"],
    ),
    "multiline.py": (
        "import helper_module\n",
        ["multiline.py:1", "RuntimeError", "first line second line"],
    ),
    "keyerror.py": ("raise KeyError('k')\n", ["keyerror.py:1", "KeyError"]),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_pipeline_file_is_one_clean_line(project, name) -> None:  # type: ignore[no-untyped-def]
    source, expect = BROKEN[name]
    project.write("helper_module.py", "raise RuntimeError('first line\\nsecond line')\n")
    project.write(name, source)
    with pytest.raises(PipelineLoadError):
        select_workflow(project.root / name)
    project.fails("show", name, expect=expect)
    project.fails("run", name, expect=expect)
    if name != "no_workflow.py":  # a file that failed to import leaves no half module behind
        assert name.removesuffix(".py") not in sys.modules


def test_a_missing_pipeline_file(project) -> None:  # type: ignore[no-untyped-def]
    project.fails("show", "nowhere.py", expect=["nowhere.py"])
    project.fails("run", "nowhere.py", expect=["nowhere.py"])


def test_a_definition_error_at_import_names_the_line(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import Resources, operator, workflow

        BIG = Resources(memory="a lot")
        """,
    )
    with pytest.raises(WorkflowDefinitionError, match=r"pipeline.py:3: .*'a lot'"):
        load_module(project.root / "pipeline.py")
    project.fails("show", "pipeline.py", expect=["pipeline.py:3", "'a lot'"])


# -- import weight ---------------------------------------------------------------------------------------


def test_import_flowlib_stays_light(project) -> None:  # type: ignore[no-untyped-def]
    done = project.python(
        """
        import json, sys, time
        start = time.perf_counter()
        import flowlib
        seconds = time.perf_counter() - start
        heavy = ("networkx", "beartype", "sqlalchemy", "alembic", "scheduler", "executors", "torch", "numpy",
                 "click", "rich", "cloudpickle", "fsspec", "psutil")
        print(json.dumps({"loaded": sorted({m.split(".")[0] for m in sys.modules} & set(heavy)), "s": seconds}))
        """
    )
    assert done.code == 0, str(done)
    result = json.loads(done.out)
    assert result["loaded"] == []
    assert result["s"] < 1.0


def test_building_loads_networkx_only_for_the_graph(project) -> None:  # type: ignore[no-untyped-def]
    project.write("one.py", ONE)
    done = project.python(
        """
        import json, sys
        from flowlib.loading import select_workflow
        heavy = ("networkx", "sqlalchemy", "alembic", "scheduler", "executors")
        dag = select_workflow("one.py").build(n=2)
        built = sorted(m for m in heavy if m in sys.modules)
        dag.graph
        graphed = sorted(m for m in heavy if m in sys.modules)
        print(json.dumps([built, graphed]))
        """
    )
    assert done.code == 0, str(done)
    assert json.loads(done.out) == [[], ["networkx"]]
