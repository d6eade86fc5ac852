"""`flow show`: the DAG without running it, as text, dot, mermaid and JSON."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

PIPELINE = """
from typing import NamedTuple

from flowlib import Resources, operator, workflow


class Split(NamedTuple):
    train: list[int]
    test: list[int]


@operator
def numbers(n: int) -> list[int]:
    return list(range(n))


@operator(resources=Resources(cpus=2, gpus=1, memory="512MiB"))
def split(xs: list[int], frac: float = 0.8) -> Split:
    k = int(len(xs) * frac)
    return Split(xs[:k], xs[k:])


@operator
def total(xs: list[int]) -> int:
    return sum(xs)


@operator
def inc(x: int) -> int:
    return x + 1


@workflow
def summed(xs: list[int]) -> int:
    return total(xs)


@workflow
def demo(n: int = 10, frac: float = 0.8) -> int:
    s = split(numbers(n), frac=frac)
    bumped = inc.map([1, 2])
    return inc(summed(s.test))
"""

NAMES = ["numbers", "split", "inc[0]", "inc[1]", "inc", "summed/total", "inc-2"]
EDGES = [
    ["numbers", "split"],
    ["inc[0]", "inc"],
    ["inc[1]", "inc"],
    ["split", "summed/total"],
    ["summed/total", "inc-2"],
]


@pytest.fixture
def shown(project):  # type: ignore[no-untyped-def]
    project.write("pipeline.py", PIPELINE)

    def show(*args: str):  # type: ignore[no-untyped-def]
        done = project.flow("show", "pipeline.py", "demo", *args)
        assert done.code == 0, str(done)
        assert done.err == ""
        return done

    return show


def test_json_has_the_documented_shape(shown) -> None:  # type: ignore[no-untyped-def]
    data = shown("--format", "json", "-p", "n=4").json()
    assert set(data) >= {"workflow", "nodes", "edges"}
    assert data["workflow"] == "demo"
    assert [node["name"] for node in data["nodes"]] == NAMES
    assert sorted(data["edges"]) == sorted(EDGES)
    nodes = {node["name"]: node for node in data["nodes"]}
    for node in data["nodes"]:
        assert set(node) >= {"name", "operator", "inputs", "resources"}
    assert nodes["numbers"]["inputs"] == {"n": {"literal": 4}}
    assert nodes["split"]["operator"] == "split"
    assert nodes["split"]["inputs"] == {
        "xs": {"node": "numbers", "output": "return"},
        "frac": {"literal": 0.8},
    }
    assert nodes["split"]["resources"] == {"cpus": 2, "gpus": 1, "memory": 512 * 2**20}
    assert nodes["summed/total"]["inputs"] == {"xs": {"node": "split", "output": "test"}}
    assert nodes["summed/total"]["operator"] == "total"
    assert nodes["inc[1]"]["inputs"] == {"x": {"literal": 2}}
    assert nodes["numbers"]["resources"] == {"cpus": 1, "gpus": 0, "memory": None}


def test_text_lists_every_node_with_its_inputs(shown) -> None:  # type: ignore[no-untyped-def]
    out = shown("-p", "frac=0.5").out
    assert out.splitlines()[0] == "workflow demo (7 nodes)"
    assert "split <- split(xs=numbers, frac=0.5)" in out
    assert "summed/total <- total(xs=split.test)" in out
    assert "inc [map] <- inc(items=2)" in out
    assert "numbers <- numbers(n=10)" in out


def test_dot_is_a_digraph_of_every_node_and_edge(shown) -> None:  # type: ignore[no-untyped-def]
    out = shown("--format", "dot").out
    assert out.startswith('digraph "demo" {') and out.rstrip().endswith("}")
    for name in NAMES:
        assert f'  "{name}";' in out
    for src, dst in EDGES:
        assert f'  "{src}" -> "{dst}";' in out
    if shutil.which("dot"):
        import subprocess

        assert subprocess.run(["dot", "-Tsvg"], input=out, text=True, capture_output=True).returncode == 0


def test_mermaid_is_a_flowchart_of_every_node_and_edge(shown) -> None:  # type: ignore[no-untyped-def]
    out = shown("--format", "mermaid").out
    lines = out.splitlines()
    assert lines[0] == "flowchart LR"
    ids = {}
    for line in lines[1:]:
        match = re.fullmatch(r'  (n\d+)\[\[?"([^"]+)"\]\]?', line)
        if match:
            ids[match.group(2)] = match.group(1)
    assert list(ids) == NAMES
    assert f'  {ids["inc"]}[["inc"]]' in lines  # the map node has its own shape
    for src, dst in EDGES:
        assert f"  {ids[src]} --> {ids[dst]}" in lines


def test_the_readme_example_shows_as_mermaid(project) -> None:  # type: ignore[no-untyped-def]
    example = Path(__file__).resolve().parent.parent / "examples" / "hello" / "pipeline.py"
    done = project.flow("show", str(example), "--format", "mermaid")
    assert done.code == 0, str(done)
    assert done.out.startswith("flowchart LR")
    assert "-->" in done.out


def test_show_runs_nothing_and_records_nothing(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        import pathlib
        from flowlib import operator, workflow

        @operator
        def touch(n: int) -> int:
            pathlib.Path("touched").write_text("ran")
            return n

        @workflow
        def w(n: int = 1) -> int:
            return touch(n)
        """,
    )
    done = project.flow("show", "pipeline.py")
    assert done.code == 0, str(done)
    assert not (project.root / "touched").exists()
    assert not (project.root / ".flow").exists()


def test_usage_errors_exit_2(project, shown) -> None:  # type: ignore[no-untyped-def]
    done = project.flow("show", "pipeline.py", "demo", "--format", "png")
    assert done.code == 2 and "png" in done.err
    project.fails("show", "pipeline.py", "demo", "-p", "n=lots", expect=["parameter 'n'", "'lots'"])
    project.fails("show", "pipeline.py", "nope", expect=["no workflow named 'nope'", "demo, summed"])


def test_flow_run_of_a_good_pipeline_still_works(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "pipeline.py",
        """
        from flowlib import operator, workflow

        @operator
        def inc(x: int) -> int:
            return x + 1

        @workflow
        def w(n: int = 1) -> int:
            return inc(inc(n))
        """,
    )
    done = project.flow("run", "pipeline.py", "-p", "n=3", "--executor", "inline", "--json")
    assert done.code == 0, str(done)
    result = done.json()
    assert result["status"] == "succeeded" and result["outputs"] == 5
    assert [node["name"] for node in result["nodes"]] == ["inc", "inc-2"]


def test_the_collector_is_on_again_after_a_build_that_raised() -> None:
    import gc

    from flowlib.cli.show_cmd import collector_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("the workflow body failed")
    assert gc.isenabled()
