"""The same `flow run` against PostgreSQL, configuration precedence, and an installed wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pg
import pytest
from e2e import make_project

from flowlib.config import load
from flowlib.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
HELLO = REPO / "examples" / "hello" / "pipeline.py"


@pytest.fixture(scope="module")
def pg_url():
    with pg.database() as url:
        yield url


@pytest.mark.postgres
def test_run_resume_and_status_on_postgresql(tmp_path, pg_url):
    project = make_project(tmp_path / "proj")
    shutil.copy(HELLO, project.root / "pipeline.py")
    done = project.flow("run", "pipeline.py", "--db", pg_url, "--json")
    assert done.code == 0, done
    run = done.json()
    assert run["outputs"] == sum(range(8))
    status = project.flow("status", run["run_id"], "--db", pg_url, "--json").json()
    assert status["status"] == "succeeded"
    again = project.flow("run", "pipeline.py", "--json", env={"FLOW_DB_URL": pg_url}).json()
    assert {node["status"] for node in again["nodes"]} == {"cached"}
    plan = project.flow("resume", run["run_id"], "--dry-run", "--json", "--db", pg_url).json()
    assert {step["action"] for step in plan} == {"reuse"}
    assert not (project.root / ".flow" / "flow.db").exists()


WIDE = (
    "from flowlib import operator, workflow\n"
    + "".join(f"\n@operator\ndef op{i}(x: int) -> int:\n    return x + {i}\n" for i in range(70))
    + "\n@workflow\ndef wide() -> list[int]:\n    return ["
    + ", ".join(f"op{i}(1)" for i in range(70))
    + "]\n"
)


@pytest.mark.postgres
def test_a_commit_of_many_operators_rows_on_postgresql(tmp_path, pg_url):
    # 70 operators: their fingerprints, attempts, artifacts and cache entries go 64 or more to a
    # commit, by COPY, which must not run inside the commit's pipeline
    project = make_project(tmp_path / "proj")
    project.write("pipeline.py", WIDE)
    done = project.flow("run", "pipeline.py", "--db", pg_url, "--json")
    assert done.code == 0, done
    assert done.json()["outputs"] == [1 + i for i in range(70)]
    again = project.flow("run", "pipeline.py", "--db", pg_url, "--json").json()
    assert {node["status"] for node in again["nodes"]} == {"cached"}


def test_configuration_precedence(tmp_path):
    (tmp_path / "flow.toml").write_text(
        '[flow]\nhome = "h"\ndb = "sqlite:///rel.db"\nexecutor = "inline"\nfsync = false\n'
        "[executors.local]\nworkers = 3\n"
    )
    config = load(tmp_path, environ={})
    assert config.home == tmp_path / "h"
    assert config.db == f"sqlite:///{tmp_path / 'rel.db'}"
    assert config.artifacts == str(tmp_path / "h" / "artifacts")
    assert (config.executor, config.fsync, config.executor_settings("local")) == (
        "inline",
        False,
        {"workers": 3},
    )
    env = {
        "FLOW_HOME": str(tmp_path / "envhome"),
        "FLOW_DB_URL": "sqlite:///env.db",
        "FLOW_EXECUTOR": "local",
    }
    config = load(tmp_path, environ=env)
    assert (config.home, config.db, config.executor) == (tmp_path / "envhome", "sqlite:///env.db", "local")
    config = load(tmp_path, environ=env, db="sqlite:///flag.db", executor="inline")
    assert (config.db, config.executor) == ("sqlite:///flag.db", "inline")


def test_home_alone_derives_db_and_artifacts(tmp_path):
    config = load(tmp_path, environ={"FLOW_HOME": str(tmp_path / "x")})
    assert config.db == f"sqlite:///{tmp_path / 'x' / 'flow.db'}"
    assert config.artifacts == str(tmp_path / "x" / "artifacts")


def test_pyproject_tool_flow_table(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.flow]\nexecutor = "inline"\n')
    assert load(tmp_path, environ={}).executor == "inline"
    (tmp_path / "pyproject.toml").write_text('[tool.flow.flow]\nexecutor = "inline"\nfsync = false\n')
    assert (load(tmp_path, environ={}).executor, load(tmp_path, environ={}).fsync) == ("inline", False)
    (tmp_path / "pyproject.toml").write_text('[tool.flow]\nexecuter = "inline"\n')
    with pytest.raises(ConfigError, match=r"pyproject.toml.*'executer'.*\[tool.flow\]"):
        load(tmp_path, environ={})
    (tmp_path / "pyproject.toml").write_text("[tool.flow.executors.local]\nworkerz = 2\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml.*workerz"):
        load(tmp_path, environ={})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[flow]\nexecuter = "local"\n', ["flow.toml", "executer"]),
        ("[flow]\nfsync = 1\n", ["flow.toml", "fsync", "bool"]),
        ('[executors.local]\nworkers = "two"\n', ["flow.toml", "workers", "int"]),
        ("[flw]\n", ["flow.toml", "flw"]),
        ("[flow\n", ["flow.toml"]),
    ],
)
def test_bad_configuration_is_one_line_exit_2(tmp_path, text, words):
    project = make_project(tmp_path / "proj")
    shutil.copy(HELLO, project.root / "pipeline.py")
    project.write("flow.toml", text)
    done = project.flow("run", "pipeline.py")
    assert done.code == 2, done
    assert any(all(word in line for word in words) for line in done.err.splitlines()), done
    assert "Traceback" not in done.err


def test_unreachable_database_is_exit_2(tmp_path):
    project = make_project(tmp_path / "proj")
    shutil.copy(HELLO, project.root / "pipeline.py")
    done = project.flow("run", "pipeline.py", "--db", "postgresql+psycopg://u:secret@127.0.0.1:1/x")
    assert done.code == 2 and "127.0.0.1:1" in done.err and "secret" not in done.err, done


def test_a_database_error_names_where_its_url_came_from(tmp_path):
    """The URL came from flow.toml, not from --db; a one-letter password hides only itself."""
    project = make_project(tmp_path / "proj")
    shutil.copy(HELLO, project.root / "pipeline.py")
    project.write("flow.toml", '[flow]\ndb = "postgresql+psycopg://u:p@127.0.0.1:1/x"\n')
    done = project.flow("run", "pipeline.py")
    assert done.code == 2, done
    assert "flow.toml" in done.err and "--db" not in done.err, done
    assert "port" in done.err and "***ort" not in done.err, done


@pytest.mark.slow
def test_an_installed_wheel_upgrades_its_database_and_runs_hello(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    wheel = next(dist.glob("flowlib-*.whl"))
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "-c", REPO / "constraints.txt", wheel]
    subprocess.run(pip, check=True)
    project = make_project(tmp_path / "proj")
    shutil.copy(HELLO, project.root / "pipeline.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env["FLOW_HOME"] = str(project.root / ".flow")
    env.pop("PYTHONPATH", None)
    flow = str(venv / "bin" / "flow")
    where = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import flowlib, migrations; print(flowlib.__file__, migrations.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(REPO) not in where, f"expected the wheel's flowlib, got {where}"
    upgrade = subprocess.run(
        [flow, "db", "upgrade"], cwd=project.root, env=env, capture_output=True, text=True
    )
    assert upgrade.returncode == 0 and "revision" in upgrade.stdout, upgrade.stderr
    run = subprocess.run(
        [flow, "run", "pipeline.py", "--json"], cwd=project.root, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert '"outputs": 28' in run.stdout


def test_flow_cancel_marks_a_run_whose_scheduler_died(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", SLOW)
    process = project.popen("run", "p.py")
    deadline = time.monotonic() + 30
    while not (project.root / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.kill()
    process.wait(timeout=10)
    run_id = project.flow("runs", "--json").json()[0]["run_id"]
    before = project.flow("status", run_id, "--json").json()
    assert before["status"] == "interrupted" and before["nodes"][0]["status"] == "interrupted", before
    assert [r["run_id"] for r in project.flow("runs", "--status", "interrupted", "--json").json()] == [run_id]
    assert project.flow("runs", "--status", "running", "--json").json() == []
    done = project.flow("cancel", run_id[:6])
    assert done.code == 0 and "scheduler was gone" in done.err, done
    status = project.flow("status", run_id, "--json").json()
    assert status["status"] == "cancelled" and status["nodes"][0]["status"] == "cancelled"


SLOW = """
import pathlib, time
from flowlib import operator, workflow

@operator
def slow(x: int) -> int:
    pathlib.Path("started").write_text("")
    time.sleep(60)
    return x

@workflow
def w(x: int = 1) -> int:
    return slow(x)
"""


def test_reading_commands_name_missing_nodes_and_ambiguous_ids(tmp_path):
    project = make_project(tmp_path / "proj")
    shutil.copy(HELLO, project.root / "pipeline.py")
    run_id = project.flow("run", "pipeline.py", "--json").json()["run_id"]
    missing = project.flow("logs", run_id, "nosuchnode")
    assert missing.code == 2 and "nosuchnode" in missing.err, missing
    assert project.flow("logs", run_id, "total").code == 0
    project.flow("run", "pipeline.py", "-p", "n=3", "--json")
    ambiguous = project.flow("status", "")
    assert ambiguous.code == 2 and "ambiguous" in ambiguous.err, ambiguous


def test_a_memory_request_beyond_the_machine_is_exit_2(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write(
        "p.py",
        SLOW.replace("@operator\n", '@operator(resources=Resources(memory="64TiB"))\n').replace(
            "from flowlib import operator, workflow", "from flowlib import Resources, operator, workflow"
        ),
    )
    done = project.flow("run", "p.py")
    assert done.code == 2 and "memory" in done.err and "slow" in done.err, done
    assert project.flow("runs", "--json").json() == []
