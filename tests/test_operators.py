"""Operators: `@operator`, plain calls, futures inside a build, NamedTuple outputs, options, map."""

from __future__ import annotations

import pytest

from flowlib import Distributed, FlowError, Operator, Resources, WorkflowDefinitionError, operator
from flowlib.dag import Container, Literal, Ref
from flowlib.futures import Future

PIPELINE = """
from typing import Any, NamedTuple

from flowlib import Distributed, Resources, operator, workflow


class Split(NamedTuple):
    train: list[int]
    test: list[int]


@operator
def numbers(n: int) -> list[int]:
    return list(range(n))


@operator(cache=False, version="3", retries=2, retry_delay=1.5, timeout=600,
          resources=Resources(cpus=2, gpus=1, memory="2GiB"), executor="local",
          distributed=Distributed(nprocs=2))
def split(xs: list[int], frac: float = 0.8) -> Split:
    k = int(len(xs) * frac)
    return Split(xs[:k], xs[k:])


@operator
def total(xs: list[int]) -> int:
    return sum(xs)


@operator
def add(a: int, b: int = 0) -> int:
    return a + b


@workflow
def demo(n: int = 10, frac: float = 0.8) -> int:
    s = split(numbers(n), frac=frac)
    return total(s.train)


@workflow
def unpacked(n: int = 4) -> int:
    train, test = split(numbers(n))
    return add(total(train), total(test))


@workflow
def whole(n: int = 4) -> Any:
    s = split(numbers(n))
    return s


@workflow
def mapped(k: int = 1) -> list[int]:
    base = add(k)
    return add.map([10, 20, 30], b=base)


@workflow
def mapped_twice() -> list[int]:
    add.map([1, 2])
    return add.map([3])


@workflow
def mapped_future(n: int = 3) -> list[int]:
    return add.map(numbers(n), b=1)
"""


@pytest.fixture
def pipe(project):  # type: ignore[no-untyped-def]
    project.write("pipeline.py", PIPELINE)
    return project.load("pipeline.py")


def test_both_decorator_forms_make_operators_with_their_options(pipe) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(pipe.numbers, Operator) and isinstance(pipe.split, Operator)
    assert pipe.numbers.name == "numbers" and pipe.numbers.cache is True and pipe.numbers.retries == 0
    split = pipe.split
    assert (split.cache, split.version, split.retries, split.retry_delay, split.timeout, split.executor) == (
        False,
        "3",
        2,
        1.5,
        600,
        "local",
    )
    assert split.resources == Resources(cpus=2, gpus=1, memory=2 * 2**30)
    assert split.distributed == Distributed(nprocs=2)
    assert split.__name__ == "split" and split.__doc__ is None
    assert split.output_names == ["train", "test"] and pipe.numbers.output_names == ["return"]


def test_outside_a_build_an_operator_is_a_plain_call(pipe) -> None:  # type: ignore[no-untyped-def]
    assert pipe.numbers(3) == [0, 1, 2]
    assert pipe.split([1, 2, 3, 4], frac=0.5) == pipe.Split([1, 2], [3, 4])
    assert pipe.add(2, b=3) == 5 and pipe.add(a=1) == 1
    assert pipe.add.map([1, 2], b=10) == [11, 12]


def test_inside_a_build_calls_record_nodes_with_literal_and_future_inputs(pipe) -> None:  # type: ignore[no-untyped-def]
    dag = pipe.demo.build(n=5, frac=0.5)
    assert list(dag.nodes) == ["numbers", "split", "total"]
    numbers, split, total = dag.nodes.values()
    assert numbers.operator is pipe.numbers and split.operator is pipe.split
    assert isinstance(numbers.inputs["n"], Literal) and numbers.inputs["n"].value == 5
    assert split.inputs["xs"] == Ref("numbers")
    assert split.inputs["frac"].value == 0.5  # a keyword literal
    assert total.inputs["xs"] == Ref("split", "train")  # an attribute future of a NamedTuple output
    assert sorted(dag.graph.edges) == [("numbers", "split"), ("split", "total")]


def test_defaults_are_bound_as_literals(pipe) -> None:  # type: ignore[no-untyped-def]
    dag = pipe.mapped.build()
    assert dag.nodes["add"].inputs["b"].value == 0


def test_a_call_in_a_build_returns_a_typed_future(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow
        seen = {}

        @operator
        def numbers(n: int) -> list[int]:
            return list(range(n))

        @workflow
        def w() -> list[int]:
            seen["f"] = numbers(3)
            return seen["f"]
        """,
    )
    pipe = project.load("pipeline.py")
    dag = pipe.w.build()
    future = pipe.seen["f"]
    assert isinstance(future, Future)
    assert future.type == list[int] and future.ref == Ref("numbers")
    assert repr(future) == "Future(numbers)"
    assert not hasattr(future, "_repr_html_")  # probes by IPython, rich and copy see a plain AttributeError
    assert dag.outputs is future


def test_namedtuple_outputs_unpack_into_field_futures(pipe) -> None:  # type: ignore[no-untyped-def]
    dag = pipe.unpacked.build()
    assert dag.nodes["total"].inputs["xs"] == Ref("split", "train")
    assert dag.nodes["total-2"].inputs["xs"] == Ref("split", "test")
    assert dag.nodes["add"].inputs == {"a": Ref("total"), "b": Ref("total-2")}


def test_a_whole_namedtuple_output_can_be_passed_on_and_returned(pipe) -> None:  # type: ignore[no-untyped-def]
    dag = pipe.whole.build()
    assert dag.outputs.ref == Ref("split")


def test_a_wrong_field_name_names_the_line_the_node_and_the_fields(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        PIPELINE
        + """
@workflow
def typo(n: int = 3) -> int:
    s = split(numbers(n))
    return total(s.tarin)  # here


@workflow
def unpack_one(n: int = 3) -> int:
    a, b = numbers(n)  # unpack
    return total(a)
""",
    )
    pipe = project.load("pipeline.py")
    with pytest.raises(WorkflowDefinitionError) as info:
        pipe.typo.build()
    message = str(info.value)
    assert f"pipeline.py:{project.line('pipeline.py', '# here')}" in message
    for part in ("workflow 'typo'", "'split'", "'tarin'", "train, test"):
        assert part in message
    with pytest.raises(WorkflowDefinitionError, match="only a NamedTuple or tuple") as info:
        pipe.unpack_one.build()
    assert f"pipeline.py:{project.line('pipeline.py', '# unpack')}" in str(info.value)
    project.fails("show", "pipeline.py", "typo", expect=["'tarin'", "pipeline.py:"])


def test_a_future_has_no_truth_value_at_build_time(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def positive(x: int) -> bool:
            return x > 0

        @workflow
        def branchy(x: int = 1) -> int:
            if positive(x):  # branch
                return 1
            return 0
        """,
    )
    with pytest.raises(
        WorkflowDefinitionError, match=r"used as a value \(a truth test\).*into an operator"
    ) as info:
        project.load("pipeline.py").branchy.build()
    assert f"pipeline.py:{project.line('pipeline.py', '# branch')}" in str(info.value)


def test_futures_inside_a_list_are_edges_of_a_container_input(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def one() -> int:
            return 1

        @operator
        def total(xs: list[int]) -> int:
            return sum(xs)

        @workflow
        def w() -> int:
            return total([one(), 2])
        """,
    )
    dag = project.load("pipeline.py").w.build()
    xs = dag.nodes["total"].inputs["xs"]
    assert isinstance(xs, Container) and xs.kind == "list"
    assert xs.items[0] == Ref("one") and xs.items[1].value == 2
    assert dag.edges() == [("one", "total")]


def test_wrong_arguments_to_an_operator_name_the_call(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def add(a: int, b: int) -> int:
            return a + b

        @workflow
        def w() -> int:
            return add(1, c=2)  # call
        """,
    )
    with pytest.raises(WorkflowDefinitionError) as info:
        project.load("pipeline.py").w.build()
    message = str(info.value)
    assert f"pipeline.py:{project.line('pipeline.py', '# call')}" in message
    assert "workflow 'w'" in message and "operator 'add'" in message


# -- definition errors -----------------------------------------------------------------------------


def test_a_parameter_without_annotation_is_refused_at_decoration() -> None:
    def train(data: list[int], lr) -> float:  # type: ignore[no-untyped-def]
        return 0.0

    with pytest.raises(WorkflowDefinitionError) as info:
        operator(train)
    message = str(info.value)
    assert "train'" in message and "parameter 'lr'" in message and "annotation" in message
    assert f"test_operators.py:{train.__code__.co_firstlineno}" in message


def test_a_missing_return_annotation_is_refused_at_decoration() -> None:
    def fit(x: int):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(
        WorkflowDefinitionError, match=r"operator 'test_a_missing.*fit' has no return annotation"
    ):
        operator(retries=1)(fit)


def test_star_args_are_a_tuple_input_and_star_kwargs_are_refused() -> None:
    def spread(*xs: int) -> int:
        return sum(xs)

    assert operator(spread)(1, 2, 3) == 6

    def named(**kw: int) -> int:
        return sum(kw.values())

    with pytest.raises(WorkflowDefinitionError, match=r"parameter 'kw'.*\*\*kwargs"):
        operator(named)


def test_annotations_missing_in_a_pipeline_file_fail_its_import_and_the_cli(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def scale(x: int, factor) -> int:
            return x * factor

        @workflow
        def w() -> int:
            return scale(1, 2)
        """,
    )
    with pytest.raises(WorkflowDefinitionError, match="parameter 'factor'"):
        project.load("pipeline.py")
    project.fails("show", "pipeline.py", expect=["pipeline.py:3", "operator 'scale'", "parameter 'factor'"])
    project.fails("run", "pipeline.py", expect=["pipeline.py:3", "parameter 'factor'"])


def test_unknown_decorator_options_list_the_valid_ones() -> None:
    with pytest.raises(WorkflowDefinitionError) as info:
        operator(retires=2)
    message = str(info.value)
    assert "retires" in message and "retries" in message and "test_operators.py:" in message


def test_bad_option_values_are_definition_errors() -> None:
    def f(x: int) -> int:
        return x

    for options in (
        {"retries": -1},
        {"timeout": 0},
        {"resources": "2GiB"},
        {"distributed": 2},
        {"name": "a/b"},
        {"name": "a[0]"},
    ):
        with pytest.raises(WorkflowDefinitionError):
            operator(**options)(f)


def test_operator_refuses_what_is_not_a_function() -> None:
    with pytest.raises(WorkflowDefinitionError, match="decorates functions"):
        operator(int)


# -- with_options ------------------------------------------------------------------------------------


def test_with_options_returns_a_copy_with_overrides(pipe) -> None:  # type: ignore[no-untyped-def]
    big = pipe.total.with_options(
        name="big_total", retries=3, resources=Resources(gpus=1, memory="8GiB"), executor="gpu", cache=False
    )
    assert isinstance(big, Operator) and big is not pipe.total
    assert (big.name, big.retries, big.executor, big.cache) == ("big_total", 3, "gpu", False)
    assert big.resources.memory == 8 * 2**30 and big.resources.gpus == 1
    assert (pipe.total.name, pipe.total.retries, pipe.total.cache) == ("total", 0, True)
    assert big.qualname == "total" and big([1, 2]) == 3


def test_with_options_name_sets_the_node_base_name(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def inc(x: int) -> int:
            return x + 1

        @workflow
        def w() -> int:
            a = inc.with_options(name="first")(1)
            b = inc.with_options(name="first")(a)
            return inc(b)
        """,
    )
    dag = project.load("pipeline.py").w.build()
    assert list(dag.nodes) == ["first", "first-2", "inc"]
    assert dag.nodes["first"].operator.qualname == "inc"


def test_a_chosen_name_never_collides_with_a_numbered_one(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def inc(x: int) -> int:
            return x + 1

        @workflow
        def w() -> int:
            a = inc.with_options(name="inc-2")(1)
            b = inc(a)
            c = inc(b)
            return inc(c)
        """,
    )
    dag = project.load("pipeline.py").w.build()
    assert list(dag.nodes) == ["inc-2", "inc", "inc-3", "inc-4"]
    assert len(dag.graph) == 4 and dag.nodes["inc-3"].inputs["x"] == Ref("inc")


def test_with_options_refuses_unknown_options(pipe) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WorkflowDefinitionError) as info:
        pipe.total.with_options(gpus=1)
    message = str(info.value)
    assert "operator 'total'" in message and "gpus" in message and "resources" in message
    assert "test_operators.py:" in message
    with pytest.raises(WorkflowDefinitionError):
        pipe.total.with_options(retries=-2)


# -- Resources and Distributed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        ("512MiB", 512 * 2**20),
        ("8GiB", 8 * 2**30),
        ("2GB", 2 * 10**9),
        ("1.5GiB", 3 * 2**29),
        ("100", 100),
        (" 4 kib ", 4096),
        (1024, 1024),
        (0, 0),
        (None, None),
    ],
)
def test_resources_memory_strings(memory, expected) -> None:  # type: ignore[no-untyped-def]
    assert Resources(memory=memory).memory == expected


@pytest.mark.parametrize("memory", ["lots", "8 gigs", "GiB", "-1GiB", "8GiBs", "", -5, True])
def test_resources_refuse_bad_memory(memory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WorkflowDefinitionError, match="memory"):
        Resources(memory=memory)


def test_resources_refuse_bad_counts() -> None:
    for kwargs in ({"cpus": -1}, {"gpus": -1}, {"gpus": 0.5}, {"cpus": "2"}, {"gpus": None}):
        with pytest.raises(WorkflowDefinitionError):
            Resources(**kwargs)
    assert Resources().to_json() == {"cpus": 1, "gpus": 0, "memory": None}


def test_distributed_is_a_declaration() -> None:
    assert Distributed(nprocs=4, backend="nccl").to_json() == {"nprocs": 4, "backend": "nccl", "nnodes": 1}
    assert Distributed(nprocs=2, nnodes=2).nnodes == 2
    for kwargs in ({"nprocs": 0}, {"nnodes": 0}, {"backend": "mpi"}, {"nprocs": "2"}):
        with pytest.raises(WorkflowDefinitionError):
            Distributed(**kwargs)


def test_bad_resources_in_a_pipeline_are_a_clean_cli_error(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import Distributed, Resources, operator, workflow

        @operator(resources=Resources(memory="lots"))
        def f(x: int) -> int:
            return x

        @workflow
        def w() -> int:
            return f(1)
        """,
    )
    project.fails("show", "pipeline.py", expect=["pipeline.py:3", "'lots'"])
    project.write(
        "pipeline.py",
        """
        from flowlib import Distributed, operator, workflow

        @operator(distributed=Distributed(nprocs=2, nnodes=2))
        def train(x: int) -> int:
            return x

        @workflow
        def w() -> int:
            return train(1)
        """,
    )
    project.fails("run", "pipeline.py", "--executor", "local", expect=["pipeline.py:", "runs on one machine"])


# -- map ---------------------------------------------------------------------------------------------


def test_map_over_a_literal_list_names_items_and_a_gathering_node(pipe) -> None:  # type: ignore[no-untyped-def]
    dag = pipe.mapped.build(k=5)
    assert list(dag.nodes) == ["add", "add-2[0]", "add-2[1]", "add-2[2]", "add-2"]
    assert [dag.nodes[f"add-2[{i}]"].inputs["a"].value for i in range(3)] == [10, 20, 30]
    assert all(dag.nodes[f"add-2[{i}]"].inputs["b"] == Ref("add") for i in range(3))
    gather = dag.nodes["add-2"]
    assert gather.kind == "map" and gather.items == ["add-2[0]", "add-2[1]", "add-2[2]"]
    assert set(dag.graph.predecessors("add-2")) == {"add-2[0]", "add-2[1]", "add-2[2]"}
    assert dag.outputs.ref == Ref("add-2")


def test_map_names_start_at_the_operator_name(pipe) -> None:  # type: ignore[no-untyped-def]
    dag = pipe.mapped_twice.build()
    assert list(dag.nodes) == ["add[0]", "add[1]", "add", "add-2[0]", "add-2"]


def test_map_over_a_future_is_one_map_node_expanded_later(pipe) -> None:  # type: ignore[no-untyped-def]
    dag = pipe.mapped_future.build()
    node = dag.nodes["add"]
    assert node.kind == "map" and node.items is None and node.map_param == "a"
    assert node.inputs["a"] == Ref("numbers") and node.inputs["b"].value == 1


def test_map_checks_item_types_and_needs_a_free_parameter(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def inc(x: int) -> int:
            return x + 1

        @operator
        def words() -> list[str]:
            return ["a"]

        @workflow
        def bad_item() -> list[int]:
            return inc.map([1, "two"])  # item

        @workflow
        def bad_future() -> list[int]:
            return inc.map(words())

        @workflow
        def all_fixed() -> list[int]:
            return inc.map([1], x=2)
        """,
    )
    pipe = project.load("pipeline.py")
    with pytest.raises(FlowError, match="parameter 'x': expected int, got str 'two'") as info:
        pipe.bad_item.build()
    assert f"pipeline.py:{project.line('pipeline.py', '# item')}" in str(info.value)
    with pytest.raises(FlowError, match="expected int, got str"):
        pipe.bad_future.build()
    with pytest.raises(WorkflowDefinitionError, match="left free"):
        pipe.all_fixed.build()
