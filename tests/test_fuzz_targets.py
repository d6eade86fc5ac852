"""The fuzz targets of benchmarks/fuzz.py, briefly and seeded (the real runs are by hand, for a
fixed time), and the faults fuzzing found in pipeline loading, as plain examples."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from flowlib.errors import PipelineLoadError, WorkflowDefinitionError
from flowlib.loading import load_module, select_workflow

FUZZ = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz.py"


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flowlib_fuzz_targets", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("target", "runs"), [("config", 1000), ("loading", 150)])
def test_a_short_seeded_fuzz_run_finds_nothing(fuzz: ModuleType, target: str, runs: int) -> None:
    path_before, modules_before = list(sys.path), set(sys.modules)
    run = fuzz.Run(target, seconds=0, runs=runs)
    try:
        fuzz.plain_loop(run, seed=1)
    finally:
        sys.path[:] = path_before
        for name in set(sys.modules) - modules_before:
            if name.startswith("fz"):
                del sys.modules[name]
    assert run.executions == runs
    assert run.kinds == {}, run.kinds  # each kind: a saved input and traceback under benchmarks/.fuzz


def test_a_pipeline_source_is_the_same_for_the_same_bytes(fuzz: ModuleType) -> None:
    data = bytes(range(256)) * 2
    assert fuzz.pipeline_source(data) == fuzz.pipeline_source(data)
    assert fuzz.pipeline_source(data) != fuzz.pipeline_source(data[1:])


@pytest.mark.parametrize(
    "body",
    [
        "    def __str__(self):\n        raise RuntimeError('no message')\n",
        "    def __str__(self):\n        return 42\n",
    ],
)
def test_an_exception_that_cannot_be_printed_is_a_pipeline_load_error(project, body: str) -> None:  # type: ignore[no-untyped-def]
    project.write("odd.py", f"class Odd(Exception):\n{body}\n\nraise Odd()\n")
    with pytest.raises(PipelineLoadError, match=r"odd\.py:\d+: cannot load the pipeline: Odd: \(its message"):
        load_module(project.root / "odd.py")
    assert "odd" not in sys.modules


def test_a_pipelines_own_flow_error_that_cannot_be_printed_is_a_pipeline_load_error(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "mine.py",
        """
        from flowlib.errors import FlowError

        class Mine(FlowError):
            def __str__(self):
                raise ValueError("no message")

        raise Mine()
        """,
    )
    with pytest.raises(PipelineLoadError, match=r"mine\.py:\d+: cannot load the pipeline: Mine"):
        select_workflow(project.root / "mine.py")
    project.write(
        "plain.py",
        "from flowlib.errors import WorkflowDefinitionError\nraise WorkflowDefinitionError('bad')\n",
    )
    with pytest.raises(WorkflowDefinitionError, match=r"plain\.py:2: bad"):  # as before: said where
        select_workflow(project.root / "plain.py")
