"""Bulk writes and keyed reads straight through the DBAPI cursor, for the scheduler's hot path.

SQLAlchemy compiles each statement once per dialect and row shape; rows then go
to `cursor.executemany` as tuples (or dicts), with each column's own bind
processor applied. This keeps SQLAlchemy's SQL and type handling and skips its
per-row parameter machinery, which cost more than SQLite's own work for a batch
(and, for a one-key read, six times the read itself).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, MetaData, Table, bindparam, delete, insert, select
from sqlalchemy.engine import Dialect


@dataclass(frozen=True)
class _Prepared:
    sql: str
    positional: bool
    names: tuple[str, ...]  # the parameters, in the statement's order
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, bind processor)
    defaults: tuple[tuple[str, Any], ...]  # (name, column default) for columns the rows leave out

    def convert(self, row: dict[str, Any]) -> Any:
        """The row as the DBAPI cursor takes it (a tuple, or a dict for named parameters)."""
        values = self.ordered(row)
        return values if self.positional else dict(zip(self.names, values, strict=True))

    def ordered(self, row: dict[str, Any]) -> tuple[Any, ...]:
        """The row's values in the statement's order, defaults filled in and bind processors applied."""
        if self.defaults:
            row = {**row, **{name: d.arg(None) if d.is_callable else d.arg for name, d in self.defaults}}
        values = self.values(row)
        if self.processors:
            values = list(values)
            for position, process in self.processors:
                values[position] = process(values[position])
        return tuple(values)

    @functools.cached_property
    def values(self) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
        """A row's values in the statement's order, as a tuple (itemgetter's own loop, in C)."""
        if len(self.names) == 1:
            name = self.names[0]
            return lambda row: (row[name],)
        return operator.itemgetter(*self.names)


_prepared: dict[tuple[str, str, int, tuple[str, ...]], _Prepared] = {}


def _prepare(dialect: Dialect, statement: Any, keys: tuple[str, ...]) -> _Prepared:
    cache_key = (dialect.name, dialect.driver, id(statement), keys)
    found = _prepared.get(cache_key)
    if found is not None:
        return found
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup if compiled.positional else compiled.binds)
    # columns the rows leave out but that have a Python-side default (SQLAlchemy "prefetches" them)
    defaults = {column.key: column.default for column in compiled.insert_prefetch}
    defaults.update({column.key: column.onupdate for column in compiled.update_prefetch})
    processors = [(i, _processor(compiled.binds[name].type, dialect)) for i, name in enumerate(names)]
    prepared = _Prepared(
        compiled.string,
        compiled.positional,
        names,
        tuple((i, process) for i, process in processors if process is not None),
        tuple((name, d) for name, d in defaults.items() if name not in keys and name in names),
    )
    _prepared[cache_key] = prepared
    # statements are module-level constants (functools.cache), so id() stays theirs
    return prepared


def _processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    # the dialect's own implementation of the type: psycopg's JSON, for one, wraps values itself
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _by_shape(
    dialect: Dialect, statement: Any, rows: Sequence[dict[str, Any]]
) -> Iterator[tuple[_Prepared, list[dict[str, Any]]]]:
    """The rows grouped by their keys, each group with `statement` prepared for those keys."""
    for keys, group in _shapes(rows).items():
        yield _prepare(dialect, statement, keys), group


def _shapes(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """The rows by their keys, in order."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return groups


def executemany(connection: Connection, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Execute `statement` once per row in the connection's transaction; rows share their keys."""
    if not rows:
        return
    cursor = connection.connection.cursor()
    try:
        for prepared, group in _by_shape(connection.dialect, statement, rows):
            cursor.executemany(prepared.sql, [prepared.convert(row) for row in group])
    finally:
        cursor.close()


COPY_MIN_ROWS = 64  # below this a pipelined INSERT is as quick, and it can ride the pipeline


def insert_many(connection: Connection, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Execute the INSERT `statement` for `rows`; on PostgreSQL many rows go by COPY, which parses
    no statement per row (a 10,000-item map's nodes and edges in a third of the time). COPY cannot
    run inside a pipeline: callers use this outside one."""
    if not by_copy(connection, rows):
        executemany(connection, statement, rows)
        return
    quote = connection.dialect.identifier_preparer.quote
    cursor = connection.connection.cursor()
    try:
        for prepared, group in _by_shape(connection.dialect, statement, rows):
            columns = ", ".join(quote(name) for name in prepared.names)
            with cursor.copy(f"COPY {quote(statement.table.name)} ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in group:
                    copy.write_row(prepared.ordered(row))
    finally:
        cursor.close()


def by_copy(connection: Connection, rows: Sequence[Any]) -> bool:
    """Whether `insert_many` and `upsert_many` send these rows by COPY (which no pipeline may hold)."""
    return connection.dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS


def upsert_many(
    connection: Connection, table: Table, rows: Sequence[dict[str, Any]], key: str, replace: tuple[str, ...]
) -> None:
    """Insert `rows`; a row whose `key` exists already updates only its `replace` columns. On
    PostgreSQL many rows are copied into a temporary twin of the table and go in from there by
    one INSERT ... SELECT, not one statement each (a third of the time for a map's cache entries).
    Within a transaction only (the temporary table empties at each commit), and no key twice."""
    if not by_copy(connection, rows):
        executemany(connection, _upsert(connection.dialect.name, table, key, replace), rows)
        return
    staging = _staging(table)
    quote = connection.dialect.identifier_preparer.quote
    connection.exec_driver_sql(  # AS SELECT: the columns without their NOT NULLs and defaults
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {quote(staging.name)} ON COMMIT DELETE ROWS "
        f"AS SELECT * FROM {quote(table.name)} WITH NO DATA"
    )
    for keys, group in _shapes(rows).items():
        # empty but for an earlier shape or call in this transaction (each commit empties it)
        connection.execute(delete(staging))
        insert_many(connection, _insert(staging), group)
        connection.execute(_upsert_from(table, staging, key, replace, keys))


@functools.cache
def _upsert(dialect: str, table: Table, key: str, replace: tuple[str, ...]) -> Any:
    """INSERT ... ON CONFLICT, built once per shape: building it per batch cost more than running it."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:  # imported when needed: PostgreSQL's dialect takes 50 ms to import
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return _on_conflict(dialect_insert(table), key, replace)


@functools.cache
def _upsert_from(
    table: Table, staging: Table, key: str, replace: tuple[str, ...], keys: tuple[str, ...]
) -> Any:
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    statement = postgresql_insert(table).from_select(list(keys), select(*(staging.c[k] for k in keys)))
    return _on_conflict(statement, key, replace)


def _on_conflict(statement: Any, key: str, replace: tuple[str, ...]) -> Any:
    if replace:
        updates = {name: statement.excluded[name] for name in replace}
        return statement.on_conflict_do_update(index_elements=[key], set_=updates)
    return statement.on_conflict_do_nothing(index_elements=[key])


@functools.cache
def _insert(table: Table) -> Any:
    return insert(table)  # one statement object per table: `_prepare` keeps its compiled form by id


@functools.cache
def _staging(table: Table) -> Table:
    """A temporary table shaped like `table`, without its constraints (one per session)."""
    columns = [Column(column.name, column.type) for column in table.columns]
    return Table(f"flow_staging_{table.name}", MetaData(), *columns)


IN_CHUNK = 500  # values per `IN (...)`: SQLite builds before 3.32 allow 999 parameters a statement


def chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """`values` in slices short enough for one `IN (...)` each."""
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


def select_in(
    connection: Connection, columns: tuple[Column[Any], ...], key: Column[Any], values: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """The rows (`columns`, each through its type's result processor) whose `key` is in `values`."""
    if not values:
        return []
    dialect = connection.dialect
    results = _readers(dialect, columns)
    found: list[tuple[Any, ...]] = []
    cursor = connection.connection.cursor()
    try:
        for chunk in map(list, chunks(values)):
            size = 1 << (len(chunk) - 1).bit_length()  # a few statement sizes, each compiled once
            chunk += chunk[-1:] * (size - len(chunk))  # repeats match the same rows again: harmless
            prepared = _prepare(dialect, _select_in(columns, key, size), ())
            cursor.execute(prepared.sql, prepared.convert({f"v{i}": v for i, v in enumerate(chunk)}))
            found.extend(cursor.fetchall())
    finally:
        cursor.close()
    if any(results):
        return [tuple(v if p is None else p(v) for p, v in zip(results, row, strict=True)) for row in found]
    return [tuple(row) for row in found]


_read: dict[tuple[str, str, tuple[Column[Any], ...]], list[Callable[[Any], Any] | None]] = {}


def _readers(dialect: Dialect, columns: tuple[Column[Any], ...]) -> list[Callable[[Any], Any] | None]:
    """Each column's result processor for the dialect (made once: a few microseconds a read)."""
    key = (dialect.name, dialect.driver, columns)
    if key not in _read:
        _read[key] = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
    return _read[key]


@functools.cache
def _select_in(columns: tuple[Column[Any], ...], key: Column[Any], size: int) -> Any:
    return select(*columns).where(key.in_([bindparam(f"v{i}") for i in range(size)]))
