"""The run database: schema creation and upgrade, refusal of newer schemas, SQLite under
several writing processes, and PostgreSQL, all against real databases."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, delete, func, insert, inspect, select, text

from flowlib.errors import ConfigError
from scheduler.store import db
from scheduler.store.models import events, metadata, nodes, runs

ROOT = Path(__file__).resolve().parents[1]

# Each worker races the others to create the schema, then interleaves small
# write transactions with reads; any "database is locked" makes it exit non-zero.
WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sqlalchemy import func, insert, select
    from scheduler.store import db
    from scheduler.store.models import events

    url, worker, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    engine = db.connect(url)
    for i in range(count):
        with engine.begin() as conn:
            seen = conn.scalar(select(func.count()).select_from(events).where(events.c.run_id == worker))
            assert seen == i, (seen, i)
            conn.execute(insert(events), [{"run_id": worker, "kind": "tick", "data": {"i": i}}])
        with engine.connect() as conn:
            conn.execute(select(events).order_by(events.c.id.desc()).limit(5)).all()
    """
)


@pytest.fixture(scope="session")
def pg_server() -> str:
    url = pg.server_url()
    if url is None:
        pytest.skip(pg.why_unavailable())
    return url


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    url = pg.create_database(pg_server)
    yield url
    pg.drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    # connect() makes the folder itself; tests that go through alembic directly need it too.
    (tmp_path / "home").mkdir()
    url = db.default_url(tmp_path / "home")
    yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of each backend."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def _schema_diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def _set_version(url: str, version: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": version})
    engine.dispose()


def _run_workers(url: str, count: int, tmp_path: Path, workers: int = 4) -> None:
    go = tmp_path / "go"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, f"w{n}", str(count), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(workers)
    ]
    time.sleep(0.5)  # let every interpreter start so they really race
    go.touch()
    outputs = [proc.communicate(timeout=180)[0] for proc in procs]
    failed = [(p.returncode, out) for p, out in zip(procs, outputs, strict=True) if p.returncode != 0]
    assert not failed, f"workers failed: {failed}"


def test_default_url_is_flow_db_in_home(tmp_path: Path) -> None:
    assert db.default_url(tmp_path) == f"sqlite:///{tmp_path / 'flow.db'}"


def test_fresh_sqlite_file_gets_schema_wal_and_busy_timeout(sqlite_url: str, tmp_path: Path) -> None:
    engine = db.connect(sqlite_url)

    assert (tmp_path / "home" / "flow.db").exists()
    assert db.current_revision(engine) == db.head_revision()
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_each_connect_gives_its_own_engine(sqlite_url: str) -> None:
    """Nothing is kept per process: the caller owns the engine it opened."""
    first, second = db.connect(sqlite_url), db.connect(sqlite_url)
    assert first is not second
    first.dispose()
    with second.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from runs").scalar() == 0


def test_migrated_schema_equals_the_models(any_url: str) -> None:
    engine = db.connect(any_url)

    assert db.current_revision(engine) == db.head_revision()
    assert _schema_diff(any_url) == []


def test_alembic_upgrade_and_downgrade_through_env_py(any_url: str) -> None:
    """The env.py path the `alembic` command line takes: its own engine from sqlalchemy.url."""
    config = db.alembic_config(url=any_url)
    command.upgrade(config, "head")
    assert _schema_diff(any_url) == []

    command.downgrade(config, "base")
    engine = create_engine(any_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_older_database_is_upgraded(any_url: str) -> None:
    command.upgrade(db.alembic_config(url=any_url), "head")
    command.downgrade(db.alembic_config(url=any_url), "base")

    assert db.current_revision(db.connect(any_url, upgrade=False)) is None
    assert db.upgrade(any_url) == db.head_revision()
    assert db.current_revision(db.connect(any_url)) == db.head_revision()
    assert _schema_diff(any_url) == []


def test_a_run_recorded_at_0001_is_kept_by_the_upgrade(any_url: str) -> None:
    """0002 drops the nodes.cache_key index; the rows stay, and the index comes back on downgrade."""
    command.upgrade(db.alembic_config(url=any_url), "0001")
    engine = create_engine(any_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO runs (id, workflow, file, params, status, created_at, host, "user", root_run_id) '
                "VALUES ('r1', 'w', 'f', '{}', 'succeeded', 1, 'h', 'u', 'r1')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO nodes (run_id, name, operator, status, cache_key, position, attempts, cached) "
                "VALUES ('r1', 'a', 'op', 'succeeded', :key, 0, 1, false)"
            ),
            {"key": "k" * 64},
        )
    assert "ix_nodes_cache_key" in {index["name"] for index in inspect(engine).get_indexes("nodes")}
    engine.dispose()

    assert db.upgrade(any_url) == db.head_revision()
    engine = create_engine(any_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name, cache_key FROM nodes WHERE run_id = 'r1'")).all() == [
            ("a", "k" * 64)
        ]
    assert "ix_nodes_cache_key" not in {index["name"] for index in inspect(engine).get_indexes("nodes")}
    engine.dispose()
    assert _schema_diff(any_url) == []

    command.downgrade(db.alembic_config(url=any_url), "0001")
    engine = create_engine(any_url)
    assert "ix_nodes_cache_key" in {index["name"] for index in inspect(engine).get_indexes("nodes")}
    engine.dispose()


def test_database_newer_than_the_code_is_refused(any_url: str) -> None:
    db.connect(any_url).dispose()
    _set_version(any_url, "9999_from_the_future")

    for upgrade in (True, False):
        with pytest.raises(ConfigError, match="newer") as info:
            db.connect(any_url, upgrade=upgrade)
        message = str(info.value)
        assert "9999_from_the_future" in message
        assert f"head {db.head_revision()}" in message
        assert "upgrade flowlib" in message


def test_failed_schema_creation_leaves_no_half_schema(any_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_create_all = metadata.create_all

    def create_then_crash(bind: object, **kwargs: object) -> None:
        real_create_all(bind, **kwargs)
        raise RuntimeError("crash after the DDL")

    monkeypatch.setattr(metadata, "create_all", create_then_crash)
    with pytest.raises(RuntimeError, match="crash after the DDL"):
        db.connect(any_url)
    engine = create_engine(any_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()

    monkeypatch.setattr(metadata, "create_all", real_create_all)
    assert db.current_revision(db.connect(any_url)) == db.head_revision()


def _schema(url: str) -> dict[str, dict[str, object]]:
    """Every table's columns, keys, indexes and constraints, as the inspector reports them."""
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in found.get_columns(table)
                ],
                "pk": found.get_pk_constraint(table),
                "fks": sorted(str(fk) for fk in found.get_foreign_keys(table)),
                "indexes": sorted(str(ix) for ix in found.get_indexes(table)),
                "unique": sorted(str(uq) for uq in found.get_unique_constraints(table)),
            }
            for table in sorted(found.get_table_names())
        }
    finally:
        engine.dispose()


def test_a_new_database_gets_the_schema_the_migrations_build(any_url: str, tmp_path: Path) -> None:
    """connect() creates a new database from the models and stamps it; the migrations must agree."""
    db.connect(any_url).dispose()
    created = _schema(any_url)
    engine = create_engine(any_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == db.head_revision()
    engine.dispose()

    command.downgrade(db.alembic_config(url=any_url), "base")
    command.upgrade(db.alembic_config(url=any_url), "head")

    assert _schema(any_url) == created
    assert "runs" in created and "alembic_version" in created


def test_tables_without_a_revision_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE runs (x INTEGER)")
    engine.dispose()

    with pytest.raises(ConfigError, match="not created by flowlib"):
        db.connect(url)


def test_upgrade_returns_head(any_url: str) -> None:
    assert db.upgrade(any_url) == db.head_revision()
    assert db.upgrade(any_url) == db.head_revision()


def test_rows_round_trip_and_cascade(any_url: str) -> None:
    engine = db.connect(any_url)
    with engine.begin() as conn:
        conn.execute(insert(runs), [{"id": "r1", "workflow": "wf", "file": "/p.py", "params": {"n": 1},
                                     "status": "running", "host": "h", "user": "u", "root_run_id": "r1"}])  # fmt: skip
        conn.execute(insert(nodes), [{"run_id": "r1", "name": "op", "operator": "m.op", "status": "pending",
                                      "position": 0, "outputs": None}])  # fmt: skip
        conn.execute(insert(events), [{"run_id": "r1", "kind": "run_started", "data": {"a": [1, 2]}}])
    with engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.id == "r1")).one()
        assert run.created_at > 0 and run.cancel_requested is False
        node = conn.execute(select(nodes)).one()
        assert (node.attempts, node.cached, node.outputs) == (0, False, None)
        assert conn.scalar(select(func.count()).select_from(nodes).where(nodes.c.outputs.is_(None))) == 1
        assert conn.scalars(select(events.c.data)).one() == {"a": [1, 2]}
    with engine.begin() as conn:
        conn.execute(delete(runs).where(runs.c.id == "r1"))
        assert conn.scalar(select(func.count()).select_from(nodes)) == 0


def test_four_processes_write_one_sqlite_file(sqlite_url: str, tmp_path: Path) -> None:
    _run_workers(sqlite_url, 200, tmp_path)

    engine = db.connect(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(select(events.c.run_id, func.count()).group_by(events.c.run_id)).all()
    assert dict(rows) == {f"w{n}": 200 for n in range(4)}


def _write_event_in_child(url: str) -> None:
    with db.connect(url).begin() as conn:
        conn.execute(insert(events), [{"run_id": "child", "kind": "tick"}])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_engine(sqlite_url: str) -> None:
    parent_engine = db.connect(sqlite_url)
    with parent_engine.begin() as conn:
        conn.execute(insert(events), [{"run_id": "parent", "kind": "tick"}])

    child = multiprocessing.get_context("fork").Process(target=_write_event_in_child, args=(sqlite_url,))
    child.start()
    child.join(60)

    assert child.exitcode == 0
    with parent_engine.connect() as conn:
        assert sorted(conn.scalars(select(events.c.run_id))) == ["child", "parent"]


@pytest.mark.postgres
@pytest.mark.parametrize("made_by", ["models", "migrations"])
def test_postgres_updates_nodes_in_place(pg_url: str, made_by: str) -> None:
    """Half of each page of nodes stays free for the node's updates, which then touch no index:
    in a new database (made from the models) as in one upgraded through the migrations."""
    if made_by == "migrations":
        command.upgrade(db.alembic_config(url=pg_url), "0003")
    engine = db.connect(pg_url)
    with engine.connect() as conn:
        options = conn.scalar(text("select reloptions from pg_class where relname = 'nodes'"))
    assert options == ["fillfactor=50"]
    assert [index["column_names"] for index in inspect(engine).get_indexes("nodes")] == [["run_id", "name"]]


@pytest.mark.postgres
def test_four_processes_create_and_write_one_postgres_database(pg_url: str, tmp_path: Path) -> None:
    _run_workers(pg_url, 25, tmp_path)

    with db.connect(pg_url).connect() as conn:
        assert conn.scalar(select(func.count()).select_from(events)) == 100


def test_unreachable_postgres_is_a_config_error_without_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://flow:s3cret-pw@127.0.0.1:{port}/flow"

    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        db.connect(url)

    assert time.monotonic() - started < 5
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "not a valid SQLAlchemy URL"),
        ("postgresql+nosuchdriver://u:pw@localhost/x", "nosuchdriver"),
    ],
)
def test_bad_url_is_a_config_error(url: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        db.connect(url)
    assert ":pw@" not in str(info.value)


def test_unopenable_sqlite_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "flow.db").mkdir()  # a folder where the file should be
    with pytest.raises(ConfigError, match="cannot open database"):
        db.connect(f"sqlite:///{tmp_path / 'flow.db'}")


def test_the_head_constant_matches_the_migration_scripts():
    from scheduler.store import db

    assert db.head_revision() == db._script().get_current_head()


def test_lookups_by_many_keys_find_them_all(any_url: str) -> None:
    """IN (...) lists are cut into chunks; every chunk's rows must come back."""
    from scheduler.store import bulk
    from scheduler.store import repository as repo

    engine = db.connect(any_url)
    keys = [f"{i:064x}" for i in range(2 * bulk.IN_CHUNK + 1)]
    entry = {"operator": "m.op", "fingerprint": "f" * 64, "inputs": {}, "serializers": {}, "created_at": 1.0}
    with engine.begin() as conn:
        rows = [
            {**entry, "key": key, "outputs": {"i": i}, "run_id": "r", "node": f"n{i}"}
            for i, key in enumerate(keys)
        ]
        repo.put_cache_entries(conn, rows)
    missing = "e" * 64
    with engine.connect() as conn:
        found = repo.find_cache_entries(conn, [*keys, missing], ("outputs",))
        # a short list is padded to a statement size compiled once: the padding finds nothing more
        few = repo.find_cache_entries(conn, [keys[3], missing, keys[7]], ("outputs", "node"))
    assert {key: row.outputs for key, row in found.items()} == {key: {"i": i} for i, key in enumerate(keys)}
    assert {key: (row.outputs, row.node) for key, row in few.items()} == {
        keys[3]: ({"i": 3}, "n3"),
        keys[7]: ({"i": 7}, "n7"),
    }


@pytest.mark.parametrize(
    "value", [{"a": [1, 2.5, None, True, "é\n"]}, [], "x", 3, {"k": {"z": 1, "a": 2}}, {1: "int key"}]
)
def test_json_columns_get_the_text_json_dumps_writes(value: object) -> None:
    assert db.json_text(value) == json.dumps(value)


def test_a_value_that_is_not_json_is_refused_by_the_json_columns() -> None:
    for _ in range(3):  # a refused value leaves nothing behind for the next ones
        with pytest.raises(TypeError, match="not JSON serializable"):
            db.json_text({"a": [object()]})
        assert db.json_text({"a": [1]}) == '{"a": [1]}'
    assert db._ENCODER is not None, "CPython's C encoder is used where it exists"
