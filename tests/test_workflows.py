"""Workflows: `wf.build(**params)`, the DAG, node names, sub-workflows, parameters and literals."""

from __future__ import annotations

import networkx
import pytest

from flowlib import FlowError, FlowTypeError, Workflow, WorkflowDefinitionError
from flowlib.dag import DAG, Literal, Ref
from flowlib.errors import ParameterError
from flowlib.hashing import UnhashableLiteral

PIPELINE = """
from typing import NamedTuple

from flowlib import operator, workflow


class Split(NamedTuple):
    train: list[int]
    test: list[int]


@operator
def numbers(n: int) -> list[int]:
    return list(range(n))


@operator
def split(xs: list[int], frac: float = 0.8) -> Split:
    k = int(len(xs) * frac)
    return Split(xs[:k], xs[k:])


@operator
def total(xs: list[int]) -> int:
    return sum(xs)


@operator
def add(a: int, b: int) -> int:
    return a + b


@workflow
def inner(xs: list[int]) -> int:
    return total(xs)


@workflow
def sub(n: int, frac: float = 0.5) -> int:
    s = split(numbers(n), frac=frac)
    return add(total(s.train), inner(s.test))


@workflow
def outer(n: int) -> int:
    return add(sub(n), sub(n + 1))


@workflow
def main(n: int = 10, m: int = 3) -> int:
    a = numbers(n)
    b = numbers(m)
    c = numbers(n + m)
    first = sub(n)
    second = sub(m, frac=0.25)
    deep = outer(2)
    return add(add(first, second), add(total(a), add(total(b), add(total(c), deep))))


@workflow
def needs(n: int, label: str, scale: float = 1.0) -> int:
    return total(numbers(n))
"""


@pytest.fixture
def pipe(project):  # type: ignore[no-untyped-def]
    project.write("pipeline.py", PIPELINE)
    return project.load("pipeline.py")


def test_build_returns_a_dag_with_a_networkx_graph_and_nodes(pipe) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(pipe.main, Workflow)
    dag = pipe.main.build(n=4)
    assert isinstance(dag, DAG) and dag.workflow == "main" and dag.params == {"n": 4, "m": 3}
    assert isinstance(dag.graph, networkx.DiGraph)
    assert set(dag.graph.nodes) == set(dag.nodes)
    assert networkx.is_directed_acyclic_graph(dag.graph)
    node = dag.nodes["split"] if "split" in dag.nodes else dag.nodes["sub/split"]
    assert node.operator is pipe.split and set(node.inputs) == {"xs", "frac"}
    assert ("numbers", "total") in dag.graph.edges
    assert sorted(dag.graph.successors("sub/split")) == ["sub/inner/total", "sub/total"]
    assert dag.to_json()["edges"] == [list(edge) for edge in dag.edges()]


def test_node_names_are_numbered_per_full_name_in_build_order(pipe) -> None:  # type: ignore[no-untyped-def]
    names = list(pipe.main.build().nodes)
    assert names[:3] == ["numbers", "numbers-2", "numbers-3"]
    # sub-workflows inline under a prefix, numbered like nodes: sub/, sub-2/; nested twice: outer/sub/inner/
    for prefix in ("sub/", "sub-2/", "outer/sub/", "outer/sub-2/"):
        assert [
            name for name in names if name.startswith(prefix) and name.count("/") == prefix.count("/")
        ] == [
            f"{prefix}numbers",
            f"{prefix}split",
            f"{prefix}total",
            f"{prefix}add",
        ]
        assert f"{prefix}inner/total" in names
    assert "outer/add" in names and "outer/sub/inner/total" in names
    # the counter is per full name: `total` and `sub/total` are different names
    assert [name for name in names if name.rsplit("/", 1)[-1].startswith("total")] == [
        "sub/total",
        "sub/inner/total",
        "sub-2/total",
        "sub-2/inner/total",
        "outer/sub/total",
        "outer/sub/inner/total",
        "outer/sub-2/total",
        "outer/sub-2/inner/total",
        "total",
        "total-2",
        "total-3",
    ]
    assert len(names) == len(set(names))


def test_sub_workflow_inputs_and_outputs_are_wired_through(pipe) -> None:  # type: ignore[no-untyped-def]
    dag = pipe.main.build(n=7, m=2)
    assert dag.nodes["sub/numbers"].inputs["n"].value == 7
    assert dag.nodes["sub-2/split"].inputs["frac"].value == 0.25
    assert dag.nodes["sub/inner/total"].inputs["xs"] == Ref("sub/split", "test")
    assert dag.nodes["outer/sub-2/numbers"].inputs["n"].value == 3  # outer computed `n + 1` on a literal
    assert dag.nodes["outer/add"].inputs == {"a": Ref("outer/sub/add"), "b": Ref("outer/sub-2/add")}
    assert dag.nodes["add"].inputs == {"a": Ref("sub/add"), "b": Ref("sub-2/add")}


def test_the_same_pipeline_and_params_give_the_same_names(project, pipe) -> None:  # type: ignore[no-untyped-def]
    first = pipe.main.build(n=5)
    second = pipe.main.build(n=5)
    again = project.load("pipeline.py").main.build(n=5)
    shape = [(name, {k: str(v) for k, v in node.inputs.items()}) for name, node in first.nodes.items()]
    assert shape == [
        (name, {k: str(v) for k, v in node.inputs.items()}) for name, node in second.nodes.items()
    ]
    assert list(first.nodes) == list(again.nodes)
    assert first.edges() == again.edges()
    # and in another process (what resume does): `flow show --format json` twice
    one, two = (
        project.flow("show", "pipeline.py", "main", "--format", "json"),
        project.flow("show", "pipeline.py", "main", "--format", "json"),
    )
    assert one.code == 0, str(one)
    assert one.json() == two.json()
    assert [node["name"] for node in one.json()["nodes"]] == list(pipe.main.build().nodes)


def test_literal_inputs_carry_a_digest_of_their_value(pipe) -> None:  # type: ignore[no-untyped-def]
    a, b = pipe.main.build(n=5), pipe.main.build(n=6)
    first, second = a.nodes["numbers"].inputs["n"], b.nodes["numbers"].inputs["n"]
    assert isinstance(first, Literal) and first.value == 5 and len(first.digest) == 64
    assert first.digest != second.digest
    assert a.nodes["numbers-2"].inputs["n"].digest == b.nodes["numbers-2"].inputs["n"].digest


# -- parameters --------------------------------------------------------------------------------------


def test_missing_required_parameters_list_the_valid_ones(pipe) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError) as info:
        pipe.needs.build(n=1)
    message = str(info.value)
    assert isinstance(info.value, FlowError)
    assert "workflow 'needs'" in message and "missing" in message and "label" in message
    assert "n, label, scale" in message


def test_unknown_parameters_list_the_valid_ones(pipe) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError) as info:
        pipe.needs.build(n=1, label="x", colour="red")
    message = str(info.value)
    assert "unknown" in message and "colour" in message and "n, label, scale" in message


def test_parameters_are_type_checked(pipe) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FlowTypeError) as info:
        pipe.needs.build(n="3", label="x")
    message = str(info.value)
    assert "workflow 'needs'" in message and "parameter 'n'" in message and "expected int" in message
    assert "str '3'" in message
    assert pipe.needs.build(n=1, label="x", scale=2).params["scale"] == 2  # an int fits a float


def test_sub_workflow_arguments_are_checked(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        PIPELINE
        + """

@operator
def words() -> list[str]:
    return ["a"]


@workflow
def bad_sub() -> int:
    return inner(words())  # here


@workflow
def bad_call() -> int:
    return sub(frac=0.3)
""",
    )
    pipe = project.load("pipeline.py")
    with pytest.raises(FlowTypeError) as info:
        pipe.bad_sub.build()
    message = str(info.value)
    assert f"pipeline.py:{project.line('pipeline.py', '# here')}" in message
    assert "sub-workflow 'inner'" in message and "parameter 'xs'" in message
    with pytest.raises(WorkflowDefinitionError, match=r"workflow 'sub'.*'n'"):
        pipe.bad_call.build()


def test_star_parameters_are_refused_for_workflows(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import workflow

        @workflow
        def w(*sizes: int) -> int:
            return 0
        """,
    )
    with pytest.raises(WorkflowDefinitionError, match="parameter 'sizes'"):
        project.load("pipeline.py")


# -- literals that cannot be hashed -------------------------------------------------------------------


def test_an_unhashable_literal_is_a_build_error_naming_its_type_and_both_fixes(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from typing import Any
        from flowlib import operator, workflow

        class Model:
            pass

        @operator
        def use(thing: Any) -> int:
            return 1

        @workflow
        def w() -> int:
            return use(Model())  # literal
        """,
    )
    with pytest.raises(UnhashableLiteral) as info:
        project.load("pipeline.py").w.build()
    assert isinstance(info.value, WorkflowDefinitionError)
    message = str(info.value)
    line = project.line("pipeline.py", "# literal")
    for part in (f"pipeline.py:{line}", "workflow 'w'", "operator 'use'", "parameter 'thing'", "Model"):
        assert part in message
    assert "__flow_hash__" in message and "through an operator" in message
    project.fails("show", "pipeline.py", expect=[f"pipeline.py:{line}", "Model", "__flow_hash__"])


def test_an_object_literal_is_refused(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from typing import Any
        from flowlib import operator, workflow

        @operator
        def use(thing: Any) -> int:
            return 1

        @workflow
        def w() -> int:
            return use(object())
        """,
    )
    with pytest.raises(WorkflowDefinitionError, match=r"type object.*__flow_hash__.*operator"):
        project.load("pipeline.py").w.build()


def test_a_class_with_flow_hash_works_as_a_literal(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        class Config:
            def __init__(self, lr: float) -> None:
                self.lr = lr
            def __flow_hash__(self) -> bytes:
                return repr(self.lr).encode()

        @operator
        def train(config: Config) -> float:
            return config.lr

        @workflow
        def w(lr: float = 0.1) -> float:
            return train(Config(lr))
        """,
    )
    pipe = project.load("pipeline.py")
    one, same, other = pipe.w.build(), pipe.w.build(), pipe.w.build(lr=0.2)
    literal = one.nodes["train"].inputs["config"]
    assert isinstance(literal, Literal) and literal.value.lr == 0.1
    assert literal.digest == same.nodes["train"].inputs["config"].digest
    assert literal.digest != other.nodes["train"].inputs["config"].digest
    assert project.flow("show", "pipeline.py").code == 0


def test_an_exception_in_the_workflow_body_is_one_clean_cli_line(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def inc(x: int) -> int:
            return x + 1

        @workflow
        def w(n: int = 1) -> int:
            table = {"a": 1}
            return inc(table["missing"])  # boom
        """,
    )
    line = project.line("pipeline.py", "# boom")
    project.fails(
        "show", "pipeline.py", expect=[f"pipeline.py:{line}", "workflow 'w'", "KeyError", "missing"]
    )
    project.fails("run", "pipeline.py", expect=[f"pipeline.py:{line}", "KeyError"])
