"""scheduler.store.bulk writes the same rows SQLAlchemy's own executemany would, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pg
import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    insert,
    select,
    text,
    update,
)

from scheduler.store import bulk

_ticks = itertools.count(1)
metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(32)),
    Column("data", JSON(none_as_null=True)),
    Column("flag", Boolean),
    Column("blob", LargeBinary),
    Column("made", Float, default=lambda: float(next(_ticks))),
)
INSERT = insert(things)
UPDATE = update(things).where(things.c.id == bindparam("row_id")).values(name=bindparam("name"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bulk.db'}"
        return
    with pg.database() as created:
        yield created


def test_rows_read_back_as_sqlalchemy_would_write_them(url: str) -> None:
    engine = create_engine(url)
    metadata.create_all(engine)
    rows = [
        {"id": 1, "name": "a", "data": {"k": [1, 2.5, None]}, "flag": True, "blob": b"\x00\xff"},
        {"id": 2, "name": "b", "data": None, "flag": False, "blob": None},
    ]
    with engine.begin() as conn:
        bulk.executemany(conn, INSERT, rows)
        bulk.executemany(
            conn, INSERT, [{"id": 3, "name": "c", "data": [1], "flag": None, "blob": b"", "made": 0.5}]
        )
        bulk.executemany(conn, UPDATE, [{"row_id": 2, "name": "renamed"}])
    with engine.connect() as conn:
        found = {row.id: row for row in conn.execute(select(things))}
        nulls = conn.execute(select(things.c.id).where(things.c.data.is_(None))).scalars().all()
    engine.dispose()

    assert found[1].data == {"k": [1, 2.5, None]} and found[1].flag is True and found[1].blob == b"\x00\xff"
    assert found[2].name == "renamed" and found[2].data is None and found[2].flag is False
    assert nulls == [2]  # none_as_null: SQL NULL, not the JSON text 'null'
    # a column left out gets its Python default, computed per row; a given value wins
    assert found[1].made != found[2].made and found[1].made >= 1 and found[3].made == 0.5


def test_many_rows_read_back_alike_through_copy(url: str) -> None:
    """Enough rows for PostgreSQL's COPY path: awkward text, JSON, bytes, NULLs and defaults come
    back as one INSERT a row would have written them."""
    engine = create_engine(url)
    metadata.create_all(engine)
    awkward = ["tab\there", "new\nline", 'back\\slash "quoted"', "\\N", "é✓", ""]
    rows = [
        {
            "id": i,
            "name": awkward[i % len(awkward)],
            "data": None if i % 7 == 0 else {"text": awkward[i % len(awkward)], "n": [i, i / 3]},
            "flag": (None, True, False)[i % 3],
            "blob": None if i % 5 == 0 else bytes([0, 92, 10, i % 256]),
        }
        for i in range(1, bulk.COPY_MIN_ROWS * 2)
    ]
    statements = _count_statements(engine)
    with engine.begin() as conn:
        bulk.insert_many(conn, INSERT, rows)
    with engine.connect() as conn:
        found = {row.id: row._asdict() for row in conn.execute(select(things))}
        nulls = set(conn.execute(select(things.c.id).where(things.c.data.is_(None))).scalars())
        counted = statements(conn)
    engine.dispose()

    if counted is not None:
        assert counted == 1, f"{counted} statements for {len(rows)} rows of one shape: not one COPY"

    assert {i: {k: v for k, v in row.items() if k != "made"} for i, row in found.items()} == {
        row["id"]: row for row in rows
    }
    assert nulls == {row["id"] for row in rows if row["data"] is None}
    assert all(row["made"] >= 1 for row in found.values()) and len(
        {r["made"] for r in found.values()}
    ) == len(rows)


def test_many_rows_upsert_alike_through_a_staging_table(url: str) -> None:
    """upsert_many: a new row goes in whole, an existing one changes only its `replace` columns,
    whether the rows go one statement each (SQLite, few rows) or through PostgreSQL's COPY into
    a temporary table; rows of two shapes, and a second call in the same transaction, too."""
    engine = create_engine(url)
    metadata.create_all(engine)
    n = bulk.COPY_MIN_ROWS * 2
    with engine.begin() as conn:
        bulk.executemany(
            conn, INSERT, [{"id": i, "name": "old", "data": {"v": "old"}} for i in range(1, n, 2)]
        )
    fresh = [{"id": i, "name": "new", "data": {"v": i, "text": "tab\there \\N"}} for i in range(1, n)]
    fresh += [
        {"id": i, "name": "flagged", "data": None, "flag": True} for i in range(n, n + bulk.COPY_MIN_ROWS)
    ]
    flagged = range(n, n + bulk.COPY_MIN_ROWS)
    third = range(n, n + bulk.COPY_MIN_ROWS + 16)  # the flagged ones again, and 16 more
    statements = _count_statements(engine)
    with engine.begin() as conn:
        bulk.upsert_many(conn, things, fresh, "id", ("data",))
        bulk.upsert_many(conn, things, [{"id": 1, "name": "again", "data": {"v": "again"}}], "id", ())
        bulk.upsert_many(
            conn, things, [{"id": i, "name": "third", "data": {"v": "third"}} for i in third], "id", ("data",)
        )
    with engine.connect() as conn:
        found = {row.id: row for row in conn.execute(select(things))}
        counted = statements(conn)
    engine.dispose()

    if counted is not None:  # PostgreSQL: one INSERT a shape of 64 or more rows, one a row below
        assert counted == 2 + 1 + 1, counted
    assert len(found) == n - 1 + bulk.COPY_MIN_ROWS + 16
    for i in range(1, n):
        row = found[i]
        if i % 2:  # existed: only `data` replaced
            assert (row.name, row.data) == ("old", {"v": i, "text": "tab\there \\N"}), i
        else:
            assert (row.name, row.data, row.flag) == ("new", {"v": i, "text": "tab\there \\N"}, None), i
    assert all((found[i].name, found[i].flag) == ("flagged", True) for i in flagged)
    assert all(found[i].data == {"v": "third"} for i in third)
    assert all(found[i].name == "third" for i in third if i not in flagged)
    assert all(row.made >= 1 for row in found.values())  # the column default, through the staging table too


def test_cache_entries_given_twice_in_one_batch_keep_the_last(url: str) -> None:
    # PostgreSQL refuses one INSERT ... ON CONFLICT DO UPDATE touching a row twice: the
    # repository keeps the last row of each key before the rows go by COPY
    from scheduler.store import models, repository

    engine = create_engine(url)
    models.cache_entries.create(engine)

    def entry(i: int, outputs: str) -> dict[str, object]:
        return {
            "key": f"{i:064x}",
            "operator": "op",
            "fingerprint": "f" * 64,
            "inputs": {},
            "outputs": {"return": outputs},
            "serializers": {},
            "created_at": 1.0,
            "run_id": "r",
            "node": f"n{i}",
        }

    rows = [entry(i, "first") for i in range(bulk.COPY_MIN_ROWS + 6)] + [entry(i, "last") for i in range(6)]
    with engine.begin() as conn:
        repository.put_cache_entries(conn, rows)
    with engine.connect() as conn:
        found = dict(conn.execute(select(models.cache_entries.c.key, models.cache_entries.c.outputs)).all())
    engine.dispose()
    assert len(found) == bulk.COPY_MIN_ROWS + 6
    assert [found[f"{i:064x}"]["return"] for i in range(8)] == ["last"] * 6 + ["first"] * 2


def _count_statements(engine: Any) -> Callable[[Any], int | None]:
    """On PostgreSQL, count the INSERT statements on `things` from now on (a statement-level
    trigger): the returned function reads the count; on SQLite it reads None."""
    if engine.dialect.name != "postgresql":
        return lambda conn: None
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE statements (n integer)"))
        conn.execute(
            text(
                "CREATE FUNCTION counted() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN INSERT INTO statements VALUES (1); RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER counting AFTER INSERT ON things FOR EACH STATEMENT EXECUTE FUNCTION counted()"
            )
        )
    return lambda conn: conn.scalar(text("SELECT count(*) FROM statements"))
