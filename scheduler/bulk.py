"""Bulk writes straight through the DBAPI cursor, for the scheduler's hot path.

SQLAlchemy compiles each statement once per dialect and row shape; rows then go
to `cursor.executemany` as tuples (or dicts), with each column's own bind
processor applied. This keeps SQLAlchemy's SQL and type handling and skips its
per-row parameter machinery, which cost more than SQLite's own work for a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

_MISSING = object()


@dataclass(frozen=True)
class _Prepared:
    sql: str
    positional: bool
    # per parameter: (name, bind processor or None, the column's default for a row without it)
    params: tuple[tuple[str, Callable[[Any], Any] | None, Any], ...]

    def convert(self, row: dict[str, Any]) -> Any:
        values = []
        for name, process, default in self.params:
            value = row.get(name, _MISSING)
            if value is _MISSING:
                if default is None:
                    raise KeyError(f"bulk write: row has no value for '{name}'")
                value = default.arg(None) if default.is_callable else default.arg
            values.append(process(value) if process is not None else value)
        if self.positional:
            return tuple(values)
        return dict(zip((name for name, _, _ in self.params), values, strict=True))


_prepared: dict[tuple[str, int, tuple[str, ...]], _Prepared] = {}


def _prepare(dialect: Dialect, statement: Any, keys: tuple[str, ...]) -> _Prepared:
    cache_key = (f"{dialect.name}+{dialect.driver}", id(statement), keys)
    found = _prepared.get(cache_key)
    if found is not None:
        return found
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys))
    names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
    # columns the row leaves out but that have a Python-side default (SQLAlchemy "prefetches" them)
    defaults = {column.key: column.default for column in compiled.insert_prefetch}
    defaults.update({column.key: column.onupdate for column in compiled.update_prefetch})
    params = tuple(
        (name, _processor(compiled.binds[name].type, dialect), defaults.get(name)) for name in names
    )
    prepared = _Prepared(compiled.string, compiled.positional, params)
    _prepared[cache_key] = prepared
    # statements are module-level constants (functools.cache), so id() stays theirs
    return prepared


def _processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    # the dialect's own implementation of the type: psycopg's JSON, for one, wraps values itself
    return type_.dialect_impl(dialect).bind_processor(dialect)


def executemany(connection: Connection, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Execute `statement` once per row in the connection's transaction; rows share their keys."""
    if not rows:
        return
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_shape.setdefault(tuple(row), []).append(row)
    cursor = connection.connection.cursor()
    try:
        for keys, group in by_shape.items():
            prepared = _prepare(connection.dialect, statement, keys)
            cursor.executemany(prepared.sql, [prepared.convert(row) for row in group])
    finally:
        cursor.close()
