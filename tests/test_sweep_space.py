"""A sweep's search space, the steps its trials share, and where its study is stored (no processes)."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.sweeps.read import best_of
from scheduler.sweeps.space import SweepError, grid_space, parse_space, split_space
from scheduler.sweeps.study import storage_url
from scheduler.sweeps.trials import TrialPlans, shared_nodes

PIPELINE = """
from flowlib import operator, workflow

@operator
def prepare(n: int) -> list[float]:
    return [float(i) for i in range(n)]

@operator
def scale(xs: list[float], factor: float) -> list[float]:
    return [x * factor for x in xs]

@operator
def fit(xs: list[float], lr: float, hidden: int, name: str) -> float:
    return sum(xs) * lr + hidden

@workflow
def tune(lr: float = 0.1, hidden: int = 8, name: str = "a", flag: bool = False, n: int = 5) -> float:
    data = scale(prepare(n), 2.0)
    return fit(data, lr, hidden, name)
"""


@pytest.fixture
def tune(project: Any) -> Any:
    project.write("pipeline.py", PIPELINE)
    return project.load("pipeline.py").tune


def test_specs_become_distributions_typed_by_the_parameters(tune: Any) -> None:
    from optuna import distributions as d

    dims = parse_space(
        tune,
        {
            "lr": "loguniform(1e-4, 1e-1)",
            "hidden": "int(8,64)",
            "name": "choice(a, 'b c')",
            "flag": "choice(true,false)",
        },
    )
    assert dims["lr"].distribution() == d.FloatDistribution(1e-4, 1e-1, log=True)
    assert dims["hidden"].distribution() == d.IntDistribution(8, 64)
    assert dims["name"].choices == ("a", "b c")
    assert dims["flag"].choices == (True, False)
    # an int range for a float parameter hands out whole numbers as floats
    ranged = parse_space(tune, {"lr": "int(1,3)"})["lr"]
    assert ranged.distribution() == d.FloatDistribution(1.0, 3.0, step=1.0)
    assert ranged.grid() == [1.0, 2.0, 3.0]
    # choice(1,2) for an int parameter gives ints, for a float one floats
    assert parse_space(tune, {"hidden": "choice(1,2)"})["hidden"].choices == (1, 2)
    assert [type(c) for c in parse_space(tune, {"lr": "choice(1,2)"})["lr"].choices] == [float, float]
    # the recorded spec reads back as the same dimension
    for dim in dims.values():
        assert parse_space(tune, {dim.name: dim.spec})[dim.name] == dim


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"depth": "int(1,2)"}, "has no parameter 'depth'; its parameters: lr, hidden, name, flag, n"),
        ({"lr": "uniform(0,1)"}, "expected int(lo,hi), float(lo,hi), loguniform(lo,hi) or choice(a,b,...)"),
        ({"lr": "float(1,0.5)"}, "lo must be below hi"),
        ({"lr": "float(0,1,2)"}, "takes two numbers, got 3"),
        ({"lr": "loguniform(0,1)"}, "loguniform needs lo above 0"),
        (
            {"hidden": "float(1,8)"},
            "parameter 'hidden' of workflow 'tune' is int; use int(lo,hi) or choice(...)",
        ),
        ({"name": "int(1,8)"}, "is str; use choice(...)"),
        ({"hidden": "int(1.5,8)"}, "must be whole numbers"),
        ({"hidden": "choice(1,x)"}, "cannot read 'x' as int"),
        ({"hidden": "choice(1,1)"}, "1 is listed twice"),
        ({"hidden": "choice(1,,2)"}, "an empty value between commas"),
        ({}, "give --space NAME=SPEC at least once"),
    ],
)
def test_a_bad_space_is_one_clear_error(tune: Any, space: dict[str, str], expected: str) -> None:
    with pytest.raises(SweepError, match=None) as caught:
        parse_space(tune, space)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_space_flags_and_fixed_parameters(tune: Any) -> None:
    assert split_space(["lr=float(0,1)", "hidden = int(1,2)"]) == {"lr": "float(0,1)", "hidden": " int(1,2)"}
    with pytest.raises(SweepError, match="expected NAME=SPEC"):
        split_space(["lr"])
    with pytest.raises(SweepError, match="--space lr is given twice"):
        split_space(["lr=float(0,1)", "lr=float(0,2)"])
    with pytest.raises(SweepError, match="both as -p and as --space"):
        parse_space(tune, {"lr": "float(0,1)"}, {"lr": 0.5})
    with pytest.raises(SweepError, match="--sampler grid: parameter 'lr' is float"):
        grid_space(parse_space(tune, {"lr": "float(0,1)"}))
    assert grid_space(parse_space(tune, {"hidden": "int(1,3)", "name": "choice(a,b)"})) == {
        "hidden": [1, 2, 3],
        "name": ["a", "b"],
    }


def test_steps_that_no_tuned_parameter_reaches_are_shared(tune: Any) -> None:
    plans = TrialPlans(tune, {})
    first, last = plans.probes(parse_space(tune, {"lr": "float(0.1,0.9)", "hidden": "int(1,4)"}))
    assert shared_nodes(first, last) == {"prepare", "scale"}
    # a tuned parameter upstream makes everything below it a trial's own
    first, last = plans.probes(parse_space(tune, {"n": "int(2,5)"}))
    assert shared_nodes(first, last) == set()


def test_the_study_lives_beside_the_run_database_never_in_it() -> None:
    assert storage_url("sqlite:////srv/flow/.flow/flow.db") == "sqlite:////srv/flow/.flow/flow-optuna.db"
    pg = storage_url("postgresql+psycopg://u:pw@db.example:5432/flow?sslmode=require")
    assert pg.startswith("postgresql+psycopg://u:pw@db.example:5432/flow?")
    assert "options=-csearch_path%3Doptuna" in pg and "sslmode=require" in pg
    with pytest.raises(SweepError, match="in-memory"):
        storage_url("sqlite://")


def test_the_best_trial_follows_the_direction() -> None:
    trials = [
        {"number": 0, "state": "complete", "value": 2.0, "params": {"x": 1}, "run_id": "a"},
        {"number": 1, "state": "pruned", "value": 0.5, "params": {"x": 2}, "run_id": "b"},
        {"number": 2, "state": "complete", "value": 1.0, "params": {"x": 3}, "run_id": "c"},
        {"number": 3, "state": "complete", "value": 1.0, "params": {"x": 4}, "run_id": "d"},
    ]
    assert best_of(trials, "minimize") == {"trial": 2, "run_id": "c", "params": {"x": 3}, "value": 1.0}
    assert best_of(trials, "maximize")["trial"] == 0  # type: ignore[index]
    assert best_of(trials[1:2], "minimize") is None
