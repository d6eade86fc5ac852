"""Caching and resume, counted by real executions: operators append to marks/NAME when they run."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from e2e import MARK, Project, make_project


@pytest.fixture
def project(tmp_path) -> Project:
    project = make_project(tmp_path / "proj")
    project.write("helpers.py", HELPERS)
    project.write("p.py", PIPELINE)
    return project


HELPERS = """
def scale(x):
    return x * 2
"""

PIPELINE = (
    MARK
    + """
from flowlib import operator, workflow
from helpers import scale

OFFSET = 1


@operator
def load(n: int) -> list[int]:
    mark("load")
    return list(range(n))


@operator
def double(xs: list[int]) -> list[int]:
    mark("double")
    return [scale(x) for x in xs]


@operator
def shift(xs: list[int]) -> list[int]:
    mark("shift")
    return [x + OFFSET for x in xs]


@operator
def total(a: list[int], b: list[int], k: int) -> int:
    mark("total")
    return sum(a) + sum(b) + k


@workflow
def pipe(n: int = 4, k: int = 0) -> int:
    xs = load(n)
    return total(double(xs), shift(xs), k)
"""
)
NAMES = ("load", "double", "shift", "total")


def counts(project: Project) -> dict[str, int]:
    return {name: len(project.marks(name)) for name in NAMES}


def run(project: Project, *args: str) -> dict:
    done = project.flow("run", "p.py", "--json", *args)
    assert done.code in (0, 1), done
    return done.json()


def edit(project: Project, old: str, new: str, file: str = "p.py") -> None:
    path = project.root / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_identical_second_run_executes_nothing(project):
    first = run(project)
    assert counts(project) == dict.fromkeys(NAMES, 1)
    second = run(project)
    assert counts(project) == dict.fromkeys(NAMES, 1)
    assert second["outputs"] == first["outputs"]
    assert {n["status"] for n in second["nodes"]} == {"cached"}
    assert all(n["cached"] and n["attempts"] == 0 for n in second["nodes"])


def test_editing_one_operator_reruns_it_and_downstream_only(project):
    run(project)
    edit(project, "return [x + OFFSET for x in xs]", "return [x + OFFSET + 1 for x in xs]")
    run(project)
    assert counts(project) == {"load": 1, "double": 1, "shift": 2, "total": 2}


def test_editing_a_helper_reruns_its_callers(project):
    run(project)
    edit(project, "return x * 2", "return x * 3", file="helpers.py")
    result = run(project)
    assert counts(project) == {"load": 1, "double": 2, "shift": 1, "total": 2}
    assert result["outputs"] == sum(x * 3 for x in range(4)) + sum(x + 1 for x in range(4))


def test_comments_and_formatting_do_not_invalidate(project):
    run(project)
    edit(project, '    mark("shift")\n', "    # a comment\n\n    mark( 'shift' )  # another\n")
    edit(project, "def load(n: int) -> list[int]:", 'def load(n: int) -> list[int]:\n    """Docstring."""')
    run(project)
    assert counts(project) == dict.fromkeys(NAMES, 1)


def test_a_constant_change_reruns_its_users(project):
    run(project)
    edit(project, "OFFSET = 1", "OFFSET = 2")
    run(project)
    assert counts(project) == {"load": 1, "double": 1, "shift": 2, "total": 2}


def test_a_parameter_change_reruns_only_affected_nodes(project):
    run(project)
    run(project, "-p", "k=5")
    assert counts(project) == {"load": 1, "double": 1, "shift": 1, "total": 2}


def test_early_cut_off_when_an_upstream_output_is_unchanged(project):
    run(project)
    edit(project, "    return [scale(x) for x in xs]", "    ys = [scale(x) for x in xs]\n    return ys")
    run(project)
    # double reran (its code changed) but produced the same digest, so total was a cache hit
    assert counts(project) == {"load": 1, "double": 2, "shift": 1, "total": 1}


def test_no_cache_and_cache_false(project):
    run(project)
    run(project, "--no-cache")
    assert counts(project) == dict.fromkeys(NAMES, 2)
    edit(project, "@operator\ndef shift", "@operator(cache=False)\ndef shift")
    run(project)
    assert counts(project)["shift"] == 3 and counts(project)["load"] == 2


def test_version_bump_invalidates(project):
    run(project)
    edit(project, "@operator\ndef load", '@operator(version="2")\ndef load')
    run(project)
    # load reran; its output is the same, so everything downstream is a cache hit
    assert counts(project) == {"load": 2, "double": 1, "shift": 1, "total": 1}


def _artifacts(project: Project) -> list[Path]:
    return [
        p
        for p in (project.root / ".flow" / "artifacts").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    ]


def _corrupt_files(project: Project) -> None:
    for path in _artifacts(project):
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))


def _corrupt_everything(project: Project) -> None:
    """Flip the last byte of every artifact: files in the store and small ones in the database."""
    _corrupt_files(project)
    db = sqlite3.connect(project.root / ".flow" / "flow.db")
    with db:
        for digest, data in db.execute(
            "select digest, data from artifacts where data is not null"
        ).fetchall():
            db.execute(
                "update artifacts set data = ? where digest = ?",
                (data[:-1] + bytes([data[-1] ^ 0xFF]), digest),
            )
    db.close()


def test_a_corrupt_artifact_is_recomputed_never_used(project):
    first = run(project)
    _corrupt_everything(project)
    second = run(project)
    assert second["outputs"] == first["outputs"]
    assert counts(project) == dict.fromkeys(NAMES, 2)
    reasons = {n["name"]: n.get("reasons") for n in second["nodes"]}
    assert any("corrupt" in r for r in reasons["load"]), reasons


def test_a_corrupt_large_artifact_file_is_recomputed(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write(
        "p.py",
        MARK
        + """
from flowlib import operator, workflow

@operator
def big(n: int) -> str:
    mark("big")
    return "x" * n

@operator
def size(s: str) -> int:
    mark("size")
    return len(s)

@workflow
def sized(n: int = 100_000) -> int:
    return size(big(n))
""",
    )
    assert project.flow("run", "p.py").code == 0
    files = _artifacts(project)
    assert files, "a 100 kB output is stored as a file"
    _corrupt_files(project)
    again = project.flow("run", "p.py", "--json")
    assert again.code == 0 and again.json()["outputs"] == 100_000, again
    assert len(project.marks("big")) == 2 and len(project.marks("size")) == 1


def test_cache_ls_clear_and_gc(project):
    run(project)
    listed = project.flow("cache", "ls", "--json").json()
    assert sorted(e["operator"] for e in listed) == sorted(NAMES)
    assert project.flow("cache", "clear").code != 0  # asks, and stdin is closed
    assert project.flow("cache", "clear", "--yes").code == 0
    assert project.flow("cache", "ls", "--json").json() == []
    run(project)
    assert counts(project) == dict.fromkeys(NAMES, 2)
    garbage = project.root / ".flow" / "artifacts" / "objects" / "ab"
    garbage.mkdir(parents=True, exist_ok=True)
    (garbage / ("ab" + "0" * 62)).write_bytes(b"FLOW1 json 1\n12345")
    gc = project.flow("cache", "gc")
    assert gc.code == 0 and "removed 1 artifacts" in gc.out and "bytes freed" in gc.out, gc
    assert run(project)["outputs"] is not None and counts(project)["load"] == 2


FRAGILE = (
    MARK
    + """
from flowlib import operator, workflow

@operator
def load(n: int) -> list[int]:
    mark("load")
    return list(range(n))

@operator
def side(xs: list[int]) -> int:
    mark("side")
    return len(xs)

@operator
def explode(xs: list[int]) -> list[int]:
    mark("explode")
    raise ValueError("broken")

@operator
def finish(xs: list[int], n: int) -> int:
    mark("finish")
    return sum(xs) + n

@workflow
def fragile(n: int = 3) -> int:
    xs = load(n)
    return finish(explode(xs), side(xs))
"""
)


def test_resume_after_a_fix_reruns_only_the_broken_part(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", FRAGILE)
    failed = project.flow("run", "p.py", "--json")
    assert failed.code == 1
    run_id = failed.json()["run_id"]
    edit(project, 'raise ValueError("broken")', "return xs")
    plan = {s["name"]: s for s in project.flow("resume", run_id, "--dry-run", "--json").json()}
    assert plan["load"]["action"] == "reuse" and plan["side"]["action"] == "reuse"
    assert plan["explode"]["action"] == "rerun" and "failed" in plan["explode"]["reasons"]
    assert "code changed: explode" in plan["explode"]["reasons"]
    assert plan["finish"]["reasons"] == ["never ran", "upstream reruns"]
    resumed = project.flow("resume", run_id, "--json")
    assert resumed.code == 0, resumed
    assert resumed.json()["outputs"] == 3 + 3
    assert {n: len(project.marks(n)) for n in ("load", "side", "explode", "finish")} == {
        "load": 1,
        "side": 1,
        "explode": 2,
        "finish": 1,
    }
    why = project.flow("why", resumed.json()["run_id"], "explode")
    assert why.code == 0 and "code changed: explode" in why.out, why
    again = project.flow("resume", resumed.json()["run_id"], "--json")
    assert again.code == 0 and "nothing needed to run" in again.err
    assert {n["status"] for n in again.json()["nodes"]} == {"cached"}


def test_dry_run_after_editing_one_operator_names_it_and_downstream(project):
    first = run(project)
    edit(project, "return [scale(x) for x in xs]", "return [scale(x) + 0 for x in xs]")
    plan = {s["name"]: s for s in project.flow("resume", first["run_id"], "--dry-run", "--json").json()}
    assert {n: s["action"] for n, s in plan.items()} == {
        "load": "reuse",
        "double": "rerun",
        "shift": "reuse",
        "total": "rerun",
    }
    assert plan["double"]["reasons"] == ["code changed: double"]
    assert plan["total"]["reasons"] == ["upstream reruns"]
    edit(project, "return x * 2", "return x * 5", file="helpers.py")
    plan = {s["name"]: s for s in project.flow("resume", first["run_id"], "--dry-run", "--json").json()}
    assert "code changed: scale" in plan["double"]["reasons"]
    resumed = project.flow("resume", first["run_id"], "--json").json()
    why = project.flow("why", resumed["run_id"], "double")
    assert "code changed: scale" in why.out and "code changed: double" in why.out, why


def test_why_without_an_earlier_entry_says_so(project):
    first = run(project)
    why = project.flow("why", first["run_id"], "load")
    assert why.code == 0 and "no earlier" in why.out, why


def test_why_names_a_changed_input(project):
    run(project)
    second = run(project, "-p", "k=7")
    why = project.flow("why", second["run_id"], "total")
    assert "input changed: k" in why.out, why
    hit = project.flow("why", second["run_id"], "load")
    assert "equal" in hit.out, hit


def test_resuming_a_live_run_is_refused(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", SLEEPY)
    process = project.popen("run", "p.py", "-p", "seconds=30")
    try:
        assert _wait(lambda: project.marks("nap"))
        run_id = project.flow("runs", "--json").json()[0]["run_id"]
        refused = project.flow("resume", run_id)
        assert refused.code == 2 and str(process.pid) in refused.err and "still running" in refused.err, (
            refused
        )
    finally:
        process.kill()
        process.wait()


SLEEPY = (
    MARK
    + """
import time
from flowlib import operator, workflow

@operator
def nap(i: int, seconds: float) -> int:
    mark("nap", str(i))
    time.sleep(seconds)
    mark("napped", str(i))
    return i

@operator
def add(a: int, b: int) -> int:
    mark("add")
    return a + b

@workflow
def chain(seconds: float = 0.4) -> int:
    a = nap(1, seconds)
    b = nap(2, seconds)
    c = add(a, b)
    d = nap(3, seconds)
    e = add(c, d)
    f = nap(4, seconds)
    return add(e, f)
"""
)


def _wait(predicate, timeout=30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [0.3, 0.9, 1.6, 2.4])
def test_sigkill_at_several_points_then_resume(tmp_path, kill_after):
    project = make_project(tmp_path / "proj")
    project.write("p.py", SLEEPY)
    project.write("flow.toml", "[executors.local]\nworkers = 1\n")
    process = project.popen("run", "p.py")
    assert _wait(lambda: project.marks("nap"))
    time.sleep(kill_after)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    runs = project.flow("runs", "--json").json()
    run_id = runs[0]["run_id"]
    before = project.flow("status", run_id, "--json").json()
    succeeded = {n["name"] for n in before["nodes"] if n["status"] == "succeeded"}
    resumed = project.flow("resume", run_id, "--json")
    assert resumed.code == 0, resumed
    assert resumed.json()["outputs"] == 10
    assert resumed.json()["resumed_from"] == run_id
    statuses = {n["name"]: n["status"] for n in resumed.json()["nodes"]}
    assert all(statuses[name] == "cached" for name in succeeded), (succeeded, statuses)
    # counted by real executions: a nap committed before the kill started exactly once
    starts = [line.split()[0] for line in project.marks("nap")]
    index = {"nap": "1", "nap-2": "2", "nap-3": "3", "nap-4": "4"}
    for name in succeeded & set(index):
        assert starts.count(index[name]) == 1, f"{name} ran {starts.count(index[name])} times: {starts}"


def test_why_looks_only_backwards_and_names_the_entry_a_hit_came_from(project):
    first = run(project)
    edit(project, "return [x + OFFSET for x in xs]", "return [x + OFFSET + 1 for x in xs]")
    second = run(project)
    early = project.flow("why", first["run_id"], "shift")
    assert "no earlier" in early.out, early  # a later run is not "earlier"
    third = run(project)
    hit = project.flow("why", third["run_id"], "shift")
    assert "reused from" in hit.out and second["run_id"] in hit.out and "equal" in hit.out, hit
    missed = project.flow("why", second["run_id"], "shift", "--json").json()
    assert missed["differences"] == ["code changed: shift"] and first["run_id"] in missed["compared_with"]


def test_a_note_joins_the_reasons_a_resume_recorded(project):
    first = run(project)
    edit(project, "return [scale(x) for x in xs]", "return [scale(x) for x in list(xs)]")
    _corrupt_everything(project)  # total's cache entry, hit again (same inputs), is now unusable

    done = project.flow("resume", first["run_id"], "--json")
    assert done.code == 0, done
    reasons = {n["name"]: n.get("reasons") or [] for n in done.json()["nodes"]}
    assert reasons["total"][0] == "upstream reruns", reasons
    assert any(r.startswith("cache entry not used") and "corrupt" in r for r in reasons["total"]), reasons


MAPPED = (
    MARK
    + """
from flowlib import operator, workflow

@operator
def leaf(i: int) -> int:
    mark("leaf", str(i))
    return i * 10

@workflow
def gathered(n: int = 5) -> list[int]:
    return leaf.map(list(range(n)))
"""
)


def test_a_cached_map_with_one_corrupt_element_recomputes_that_element(tmp_path):
    """A map answered whole from the cache checks every element of its list first (in bulk)."""
    project = make_project(tmp_path / "proj")
    project.write("p.py", MAPPED)
    first = run(project)
    assert first["outputs"] == [0, 10, 20, 30, 40] and len(project.marks("leaf")) == 5
    assert run(project)["outputs"] == [0, 10, 20, 30, 40] and len(project.marks("leaf")) == 5  # whole hit
    db = sqlite3.connect(project.root / ".flow" / "flow.db")
    with db:
        (outputs,) = db.execute(
            "SELECT outputs FROM nodes WHERE run_id = ? AND name = 'leaf[2]'", (first["run_id"],)
        ).fetchone()
        digest = json.loads(outputs)["return"]["digest"]
        changed = db.execute("UPDATE artifacts SET data = ? WHERE digest = ?", (b"21", digest)).rowcount
    db.close()
    assert changed == 1
    third = run(project)
    assert third["outputs"] == [0, 10, 20, 30, 40]  # never the corrupt 21
    assert [line.split()[0] for line in project.marks("leaf")].count("2") == 2  # leaf[2] computed again
    reasons = {n["name"]: n.get("reasons") or [] for n in third["nodes"]}
    assert any("corrupt" in r for r in reasons["leaf"]), reasons
