"""Engines and the forward-only schema upgrade of the run database.

`connect(url)` is the one way in: it opens an engine (the caller owns it: nothing here
is kept per process), tunes SQLite for several writing processes, and brings the
schema to this code's alembic head, refusing a database written by a newer flowlib.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from json import encoder as json_encoder
from pathlib import Path
from sqlite3 import SQLITE_BUSY
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from flowlib.errors import ConfigError
from scheduler.store.models import metadata

__all__ = [
    "alembic_config",
    "connect",
    "current_revision",
    "default_url",
    "head_revision",
    "upgrade",
]

BUSY_TIMEOUT_S = 30
PG_CONNECT_TIMEOUT_S = 10
# Any constant works; it only has to be the same in every flowlib process.
_PG_MIGRATION_LOCK = 0x666C6F77  # "flow"


def default_url(home: Path) -> str:
    """Return the embedded SQLite URL under a flow home folder."""
    return f"sqlite:///{Path(home).expanduser().absolute() / 'flow.db'}"


def connect(url: str, *, upgrade: bool = True) -> Engine:
    """Return a new engine for `url` whose schema is at this code's head.

    A fresh or older database is upgraded when `upgrade` is true (several processes
    may race to do it: one migrates under a lock, the others wait and find it done);
    with `upgrade=False` only a newer database is refused. Raises ConfigError for a bad
    or unreachable URL and for a database newer than this code.
    """
    engine = _create_engine(url)
    try:
        _check_schema(engine, upgrade=upgrade)
    except BaseException:
        engine.dispose()
        raise
    return engine


def current_revision(engine: Engine) -> str | None:
    """Return the alembic revision the database is at (None for an empty one)."""
    return _revision_of(engine)


HEAD = "0004"  # the newest revision in migrations/versions (tests/test_db.py keeps them equal)


def head_revision() -> str:
    """Return the newest migration this code ships (known without importing alembic)."""
    return HEAD


def upgrade(url: str) -> str:
    """Upgrade the database at `url` to head and return the revision it is now at."""
    engine = connect(url, upgrade=True)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    assert revision is not None
    return revision


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    """Build the alembic Config in code, pointing at the installed `migrations` package."""
    from alembic.config import Config

    import migrations

    cfg = Config()
    # ConfigParser interpolation would read a '%' in the path as a reference.
    location = str(Path(migrations.__file__).parent).replace("%", "%%")
    cfg.set_main_option("script_location", location)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def _shown(url: str | URL) -> str:
    """The URL as it may appear in a message: password masked."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database URL {_shown(url)!r} is not a valid SQLAlchemy URL") from exc


def _create_engine(url: str) -> Engine:
    parsed = _parse(url)
    kwargs: dict[str, Any] = {}
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        _make_sqlite_folder(parsed)
        connect_args["timeout"] = BUSY_TIMEOUT_S
    elif parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() in ("psycopg", "psycopg2") and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, connect_args=connect_args, json_serializer=json_text, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"cannot open database {_shown(parsed)}: {_first_line(exc)} "
            f"(for PostgreSQL: pip install 'flowlib[postgres]')"
        ) from exc
    except ArgumentError as exc:
        raise ConfigError(f"cannot open database {_shown(parsed)}: {_first_line(exc)}") from exc
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        _set_wal(engine, parsed)
    return engine


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _c_encoder() -> Any:
    """json.dumps' C encoder, made once: json.dumps builds it anew on every call, and a run writes
    five JSON columns a node (that setup was half of each one's cost). Its arguments are
    CPython's, not a public API: where they differ, or there is no C encoder, json.dumps it is.
    No circular-reference markers: a dict shared between calls keeps the ids of a failed call's
    objects (the columns' values are flowlib's own, never circular)."""
    try:
        return json_encoder.c_make_encoder(  # type: ignore[misc]
            None, _not_json, json_encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
        )
    except TypeError:  # None (no C accelerator) or another signature
        return None


_ENCODER = _c_encoder()


def json_text(value: Any) -> str:
    """`json.dumps(value)`, for the JSON columns."""
    return "".join(_ENCODER(value, 0)) if _ENCODER is not None else json.dumps(value)


def _make_sqlite_folder(url: URL) -> None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    try:
        Path(database).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder of database {_shown(url)}: {exc}") from exc


# Pages kept per connection (SQLite's default is 2 MiB): a big map's index lookups
# (a cached rerun checks 100,000 elements) stay in memory instead of re-reading the file.
SQLITE_CACHE_KIB = 32768


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        # NORMAL is durable across process crashes in WAL mode; only power loss
        # can drop the last transactions, and it never corrupts the file.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    finally:
        cursor.close()


def _set_wal(engine: Engine, url: URL) -> None:
    # journal_mode is stored in the file, so it is set once, not per connection. Switching
    # needs the file to itself, and SQLite answers "locked" at once instead of waiting while
    # another process creates the same new database: retried for as long as a busy wait.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            with engine.connect() as conn:
                if conn.exec_driver_sql("PRAGMA page_count").scalar() == 0:
                    # only a new, empty file can take it: `flow cache gc` gives freed pages back to disk
                    conn.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                if mode != "wal" and url.database not in (None, "", ":memory:"):
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            return
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlite_errorcode", None) == SQLITE_BUSY and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            engine.dispose()
            raise _unreachable(url, exc) from exc


def _unreachable(url: URL, exc: BaseException) -> ConfigError:
    message = _first_line(getattr(exc, "orig", None) or exc)
    if url.password:  # only where it stands as a word: a one-letter password must not mangle the text
        message = re.sub(rf"(?<!\w){re.escape(str(url.password))}(?!\w)", "***", message)
    return ConfigError(f"cannot open database {_shown(url)}: {message}")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _read_revision(conn: Connection) -> str | None:
    # Plain SQL rather than alembic's MigrationContext: alembic is imported only to migrate.
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return _read_revision(conn)


def _refuse_unknown(url: URL, revision: str | None) -> None:
    if revision is None:
        return
    known = {script.revision for script in _script().walk_revisions()}
    if revision not in known:
        raise ConfigError(
            f"database {_shown(url)} is at revision {revision}, newer than this flowlib "
            f"(head {head_revision()}): upgrade flowlib"
        )


def _check_schema(engine: Engine, *, upgrade: bool) -> str | None:
    """Upgrade the schema to head if asked; return the revision it is then at."""
    url = engine.url
    head = head_revision()
    try:
        with engine.connect() as conn:
            revision = _read_revision(conn)
            if revision == head:
                return revision
            _refuse_unknown(url, revision)
            if not upgrade:
                return revision
            conn.rollback()
            with _migration_lock(conn):
                # Another process may have migrated while this one waited.
                revision = _read_revision(conn)
                _refuse_unknown(url, revision)
                if revision is None:
                    _refuse_foreign_tables(conn, url)
                    _create_at_head(conn)
                elif revision != head:
                    from alembic import command

                    command.upgrade(alembic_config(conn), "head")
            return head
    except DBAPIError as exc:
        raise _unreachable(url, exc) from exc


@contextmanager
def _migration_lock(conn: Connection) -> Iterator[None]:
    """Hold a lock across processes and one transaction around the migration.

    SQLite: BEGIN IMMEDIATE takes the database's write lock (others wait up to the
    busy timeout) and makes the DDL atomic. PostgreSQL: a transaction-scoped
    advisory lock, with DDL that is transactional anyway.
    """
    dialect = conn.dialect.name
    if dialect == "sqlite":
        # Batch migrations rebuild tables by DROP + RENAME; with foreign keys on,
        # dropping `runs` would cascade-delete every node. The pragma is a no-op
        # inside a transaction, so it goes first.
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    try:
        yield
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        if dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()


def _create_at_head(conn: Connection) -> None:
    """Create a fresh database from the models and stamp it at head, as alembic's docs advise.

    Running every migration from the first would give the same schema (tests/test_db.py
    compares them) at several times the cost of each first `flow run` on a new home.
    """
    metadata.create_all(conn)
    version = Table(
        "alembic_version",
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    version.create(conn, checkfirst=True)  # an emptied alembic_version table may be left over
    conn.execute(version.insert().values(version_num=HEAD))


def _refuse_foreign_tables(conn: Connection, url: URL) -> None:
    """Refuse to create flowlib's tables over same-named tables of unknown origin."""
    existing = set(inspect(conn).get_table_names()) & set(metadata.tables)
    if existing:
        raise ConfigError(
            f"database {_shown(url)} has tables {', '.join(sorted(existing))} but no alembic "
            f"revision: it was not created by flowlib; use another database"
        )
