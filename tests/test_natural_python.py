"""Natural Python in, usable files out: what pipelines written for other frameworks need."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from e2e import MARK, TRACEBACK, make_project


@pytest.fixture
def project(tmp_path):  # type: ignore[no-untyped-def]
    return make_project(tmp_path / "proj")


def _one_line_error(done, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    import re

    assert done.code == 2, done
    assert not re.search(TRACEBACK, done.err, re.M), done
    assert len([line for line in done.err.splitlines() if line.strip()]) == 1, done
    for fragment in fragments:
        assert fragment in done.err, (fragment, done)


CONTAINERS = (
    MARK
    + """
from flowlib import operator, workflow

@operator
def leaf(i: int) -> int:
    mark("leaf", str(i))
    return i * 10

@operator
def total(xs: list[int]) -> int:
    mark("total")
    return sum(xs)

@operator
def report(scores: dict[str, int], extra: tuple[int, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(scores.items())) + f";{extra[0] + extra[1]}"

@operator
def join(*branches: int) -> int:
    return max(branches)

@workflow
def inner(parts: list[int]) -> int:
    return total(parts)

@workflow
def w(n: int = 3) -> dict:
    leaves = [leaf(i) for i in range(n)]
    return {
        "total": total(leaves),
        "report": report({"a": leaves[0], "b": leaves[-1]}, (leaves[0], 5)),
        "join": join(*leaves),
        "sub": inner([leaves[0], 7]),
    }
"""
)


def test_lists_dicts_tuples_and_star_args_of_futures_are_inputs(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", CONTAINERS)
    done = project.flow("run", "p.py", "w", "--json")
    assert done.code == 0, done
    assert done.json()["outputs"] == {"total": 30, "report": "a=0,b=20;5", "join": 20, "sub": 7}
    shown = project.flow("show", "p.py", "w", "--format", "json").json()
    total = next(n for n in shown["nodes"] if n["name"] == "total")
    assert total["inputs"]["xs"] == {
        "list": [{"node": f"leaf{s}", "output": "return"} for s in ("", "-2", "-3")]
    }
    report = next(n for n in shown["nodes"] if n["name"] == "report")
    assert report["inputs"]["scores"]["dict"]["a"] == {"node": "leaf", "output": "return"}
    assert report["inputs"]["extra"] == {"tuple": [{"node": "leaf", "output": "return"}, {"literal": 5}]}
    assert ["leaf-3", "total"] in shown["edges"] and ["leaf-2", "join"] in shown["edges"]


def test_growing_a_list_of_futures_reruns_only_what_depends_on_it(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", CONTAINERS)
    assert project.flow("run", "p.py", "w").code == 0
    before = len(project.marks("leaf"))
    again = project.flow("run", "p.py", "w", "--json")
    assert all(n["status"] == "cached" for n in again.json()["nodes"]), again
    grown = project.flow("run", "p.py", "w", "-p", "n=4", "--json")
    assert grown.code == 0
    assert len(project.marks("leaf")) == before + 1  # only leaf 3 is new
    statuses = {n["name"]: n["status"] for n in grown.json()["nodes"]}
    assert statuses["total"] == "succeeded" and statuses["inner/total"] == "cached"


def test_a_wrong_element_is_a_build_time_type_error_naming_it(project) -> None:  # type: ignore[no-untyped-def]
    project.write(
        "p.py",
        """
from flowlib import operator, workflow

@operator
def name() -> str:
    return "x"

@operator
def total(xs: list[int]) -> int:
    return sum(xs)

@workflow
def w() -> int:
    return total([1, name()])
""",
    )
    _one_line_error(
        project.flow("run", "p.py"), "p.py:14", "parameter 'xs[1]': expected int, got str (output of 'name')"
    )


TUPLES = """
import numpy as np
from flowlib import operator, workflow

@operator
def split(n: int) -> tuple[list[int], list[int]]:
    xs = list(range(n))
    return xs[: n // 2], xs[n // 2 :]

@operator
def best(xs: list[int]) -> int:
    return np.argmax(np.array(xs))  # a numpy integer where an int is declared

@operator
def mean(xs: list[int]) -> float:
    return np.float32(sum(xs) / len(xs))

@workflow
def w(n: int = 6) -> dict:
    train, test = split(n)
    return {"best": best(train), "mean": mean(test), "both": split(n)}
"""


def test_tuple_outputs_unpack_and_numpy_scalars_are_stored_as_python_numbers(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", TUPLES)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done
    assert done.json()["outputs"] == {"best": 2, "mean": 4.0, "both": [[0, 1, 2], [3, 4, 5]]}
    run_id = done.json()["run_id"]
    with sqlite3.connect(project.root / ".flow" / "flow.db") as conn:
        rows = dict(conn.execute("SELECT name, outputs FROM nodes WHERE run_id = ?", (run_id,)).fetchall())
    assert set(json.loads(rows["split"])) == {"0", "1"}  # one artifact per element
    assert json.loads(rows["best"])["return"]["serializer"] == "json"
    assert json.loads(rows["mean"])["return"]["serializer"] == "json"


FILES = (
    MARK
    + """
from flowlib import File, operator, workflow

@operator
def load(path: File) -> int:
    mark("load")
    return len(open(path).read().splitlines())

@operator
def other(n: int) -> int:
    mark("other")
    return n

@workflow
def w(data: File = File("data/reviews.csv")) -> dict:
    return {"rows": load(data), "other": other(1)}
"""
)


def test_a_file_input_enters_the_key_by_content(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", FILES)
    project.write("data/reviews.csv", "a\nb\nc\nd\n")
    first = project.flow("run", "p.py", "--json")
    assert first.code == 0 and first.json()["outputs"]["rows"] == 4, first
    assert project.flow("run", "p.py", "--json").json()["outputs"]["rows"] == 4
    assert len(project.marks("load")) == 1  # same content: a hit
    project.write("data/reviews.csv", "a\nb\n")  # halved, same path
    third = project.flow("run", "p.py", "--json")
    assert third.json()["outputs"]["rows"] == 2
    assert len(project.marks("load")) == 2 and len(project.marks("other")) == 1
    why = project.flow("why", third.json()["run_id"], "load", "--json").json()
    assert why["differences"] == ["input changed: path (file content)"]
    other = project.flow("run", "p.py", "-p", "data=data/reviews.csv", "--json")
    assert other.json()["outputs"]["rows"] == 2 and len(project.marks("load")) == 2


RESUME = (
    MARK
    + """
import os
from flowlib import operator, workflow

@operator
def fit(region: str) -> int:
    mark("fit", region)
    if region == "us" and os.path.exists("broken"):
        raise ValueError("bad region")
    return len(region)

@workflow
def w() -> list[int]:
    return fit.map(["eu", "us", "asia"])
"""
)


def test_reuse_succeeded_keeps_nodes_whose_code_changed(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", RESUME)
    project.write("broken", "")
    failed = project.flow("run", "p.py", "--json")
    assert failed.code == 1
    (project.root / "broken").unlink()
    project.write("p.py", RESUME.replace("return len(region)", "return len(region)  # noqa\n    pass"))
    plain = project.flow("resume", failed.json()["run_id"], "--dry-run", "--json").json()
    assert {s["name"]: s["action"] for s in plain}["fit[0]"] == "rerun"  # its code changed
    kept = project.flow("resume", "latest", "--reuse-succeeded", "--dry-run", "--json").json()
    actions = {s["name"]: s for s in kept}
    assert actions["fit[0]"]["action"] == "reuse" and "--reuse-succeeded" in actions["fit[0]"]["reasons"][-1]
    assert actions["fit[1]"]["action"] == "rerun"
    done = project.flow("resume", failed.json()["run_id"], "--reuse-succeeded", "--json")
    assert done.code == 0 and done.json()["outputs"] == [2, 2, 4], done
    fits = [line.split()[0] for line in project.marks("fit")]
    assert fits.count("eu") == 1 and fits.count("asia") == 1 and fits.count("us") == 2
    why = project.flow("why", done.json()["run_id"], "fit[0]").out
    assert "--reuse-succeeded" in why and "code changed: fit" in why, why
    with sqlite3.connect(project.root / ".flow" / "flow.db") as conn:
        options = conn.execute("SELECT options FROM runs WHERE id = ?", (done.json()["run_id"],)).fetchone()[
            0
        ]
    assert json.loads(options)["reuse_succeeded"] is True


ARTIFACTS = """
import numpy as np
from flowlib import operator, workflow

@operator
def table(n: int) -> np.ndarray:
    return np.arange(n * 1000, dtype=np.float64).reshape(n, 1000)

@operator
def small(n: int) -> dict:
    return {"n": n}

@workflow
def w(n: int = 20) -> dict:
    return {"table": table(n), "small": small(n)}
"""


def test_artifact_files_are_their_format_and_flow_outputs_path_names_them(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", ARTIFACTS)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done
    paths = project.flow("outputs", "latest", "table", "--path")
    assert paths.code == 0, paths
    name, path = paths.out.strip().split("\t")
    assert name == "return" and np.load(path).shape == (20, 1000)
    small = project.flow("outputs", "latest", "small", "--path").out.strip()
    assert small == "return\t(in the database)"
    script = f"""
import flowlib
result = flowlib.get_run("{done.json()["run_id"]}")
print(result.node_outputs["small"], result.node_outputs["table"].shape, sorted(result.node_outputs))
"""
    got = subprocess.run(
        [sys.executable, "-c", script], cwd=project.root, env=project.env, capture_output=True, text=True
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.split("\n")[0] == "{'n': 20} (20, 1000) ['small', 'table']"


BIG_LIST = """
from flowlib import operator, workflow

@operator
def numbers(n: int) -> list[int]:
    return list(range(n))

@operator
def total(xs: list[int]) -> int:
    return sum(xs)

@workflow
def w(n: int = 100000) -> int:
    return total(numbers(n))
"""


def test_a_big_list_no_map_reads_is_one_artifact_and_a_cached_rerun_barely_grows_the_database(
    project,
) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", BIG_LIST)
    first = project.flow("run", "p.py", "--json")
    assert first.code == 0 and first.json()["outputs"] == sum(range(100000)), first
    artifacts = list((project.root / ".flow" / "artifacts" / "objects").rglob("*"))
    assert len([p for p in artifacts if p.is_file()]) == 1

    def size() -> int:
        return sum(f.stat().st_size for f in (project.root / ".flow").glob("flow.db*"))

    project.flow("run", "p.py")  # the plan is stored once; the rerun is fully cached
    before = size()
    again = project.flow("run", "p.py", "--json")
    assert all(n["status"] == "cached" for n in again.json()["nodes"])
    assert size() - before < 100_000, size() - before


def test_runs_delete_prune_and_gc_give_the_space_back(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", ARTIFACTS)
    runs = [project.flow("run", "p.py", "-p", f"n={n}", "--json").json()["run_id"] for n in (30, 31, 32)]
    objects = project.root / ".flow" / "artifacts" / "objects"

    def stored() -> int:
        return sum(f.stat().st_size for f in objects.rglob("*") if f.is_file())

    assert project.flow("runs", "delete", runs[0]).code == 0
    assert [r["run_id"] for r in project.flow("runs", "--json").json()] == [runs[2], runs[1]]
    assert project.flow("cache", "clear", "--yes").code == 0
    full = stored()
    gc = project.flow("cache", "gc")
    assert gc.code == 0 and stored() < full, gc  # the deleted run's table is gone from disk
    assert project.flow("runs", "prune", "--older-than", "0s", "--keep-failed").code == 0
    assert project.flow("runs", "--json").json() == []
    project.flow("cache", "gc")
    assert stored() == 0
    _one_line_error(project.flow("runs", "prune", "--older-than", "soon"), "--older-than")


THREADS = """
from flowlib import Resources, operator, workflow

@operator(resources=Resources(cpus=1))
def threads() -> int:
    import numpy  # noqa: F401 (BLAS loads with it)
    from threadpoolctl import threadpool_info
    return max(pool["num_threads"] for pool in threadpool_info())

@workflow
def w() -> int:
    return threads()
"""


def test_native_thread_pools_get_the_attempts_cpus_unless_the_user_chose(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", THREADS)
    done = project.flow("run", "p.py", "--json", "--no-cache")
    assert done.code == 0 and done.json()["outputs"] == 1, done
    chosen = project.flow(
        "run", "p.py", "--json", "--no-cache", env={"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    )
    assert chosen.code == 0 and chosen.json()["outputs"] == 2, chosen


PARAMS = """
from flowlib import operator, workflow

@operator
def total(xs: list[int]) -> int:
    return sum(xs)

@workflow
def w(xs: list[int] = [1]) -> int:
    return total(xs)
"""


def test_p_parsing_explains_the_form_and_refuses_a_name_twice(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", PARAMS)
    _one_line_error(project.flow("run", "p.py", "-p", "xs=1,2,3"), "parameter 'xs'", "-p 'xs=[1, 2, 3]'")
    _one_line_error(project.flow("run", "p.py", "-p", "xs=[1]", "-p", "xs=[2]"), "-p xs is given twice")
    assert project.flow("run", "p.py", "-p", "xs=[1,2,3]", "--json").json()["outputs"] == 6


IMPORTS = """
import os, pathlib
with open(pathlib.Path(__file__).with_name("imports.txt"), "a") as marks:
    marks.write(f"{os.getpid()}\\n")

from typing import NamedTuple
from flowlib import current, operator, workflow

class Pair(NamedTuple):
    a: int
    b: int

@operator
def pair(x: int) -> Pair:
    current.log_metric("x", x)
    return Pair(x, x + 1)

@workflow
def w() -> Pair:
    return pair(1)
"""


def test_reading_commands_never_import_the_pipeline(project) -> None:  # type: ignore[no-untyped-def]
    project.write("p.py", IMPORTS)
    done = project.flow("run", "p.py", "--json")
    assert done.code == 0, done
    run_id = done.json()["run_id"]
    imported = (project.root / "imports.txt").read_text()
    for command in (
        ["runs", "--json"],
        ["status", run_id, "--json"],
        ["logs", run_id],
        ["metrics", run_id],
        ["why", run_id, "pair"],
        ["outputs", run_id, "--json"],
        ["outputs", run_id, "pair"],
        ["outputs", run_id, "pair", "--path"],
    ):
        read = project.flow(*command)
        assert read.code == 0, read
    assert (project.root / "imports.txt").read_text() == imported
    assert project.flow("outputs", run_id, "--json").json() == {"a": 1, "b": 2}


BIG_MAP = """
from flowlib import operator, workflow

@operator
def double(x: int) -> int:
    return x * 2

@operator
def total(xs: list[int]) -> int:
    return sum(xs)

@workflow
def w(n: int = 1500) -> int:
    return total(double.map(list(range(n))))
"""


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_a_map_whose_list_is_too_big_to_keep_inline_feeds_its_gather(project, executor: str) -> None:  # type: ignore[no-untyped-def]
    # 1,500 element refs make a manifest over the inline limit: it lives in the store while its
    # elements stay in the database, and the gathering node must still be sent their bytes
    project.write("p.py", BIG_MAP)
    done = project.flow("run", "p.py", "--executor", executor, "--json")
    assert done.code == 0, done
    assert done.json()["outputs"] == sum(range(1500)) * 2
    shown = project.flow("outputs", "latest", "--json")
    assert shown.code == 0, shown
    assert shown.json() == sum(range(1500)) * 2
