"""The ORM models: one class per table of the run database (SQLite or PostgreSQL).

Times are float seconds since the epoch, so both backends store and compare them
the same way without timezone handling.
"""

from __future__ import annotations

from time import time as _now
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column

__all__ = [
    "Artifact",
    "Attempt",
    "Base",
    "CacheEntry",
    "Checkpoint",
    "Edge",
    "Event",
    "Fingerprint",
    "Metric",
    "Node",
    "Run",
]

# Stable constraint names let later migrations (SQLite batch mode included) drop
# or alter a constraint by name on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# none_as_null: a Python None is stored as SQL NULL (not the JSON text 'null'),
# so `column IS NULL` finds it.
_JSON = JSON(none_as_null=True)
# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _run_fk() -> MappedColumn[str]:
    return mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), index=True)


class Run(Base):
    """One execution of a workflow; a resumed run points at the run it resumed."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workflow: Mapped[str] = mapped_column(String)
    file: Mapped[str] = mapped_column(String)
    params: Mapped[dict[str, Any]] = mapped_column(_JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    host: Mapped[str] = mapped_column(String)
    user: Mapped[str] = mapped_column(String)
    pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    resumed_from: Mapped[str | None] = mapped_column(String(32), ForeignKey("runs.id", ondelete="SET NULL"))
    root_run_id: Mapped[str] = mapped_column(String(32))
    executor: Mapped[str | None] = mapped_column(String)
    error: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[Any | None] = mapped_column(_JSON)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    options: Mapped[dict[str, Any] | None] = mapped_column(_JSON)


class Node(Base):
    """One node of a run's DAG, map items included."""

    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    name: Mapped[str] = mapped_column(String)
    operator: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String(16))
    cache_key: Mapped[str | None] = mapped_column(String(64))  # not indexed: see migration 0002
    fingerprint: Mapped[str | None] = mapped_column(String(64))  # digest; the parts are in `fingerprints`
    inputs: Mapped[Any | None] = mapped_column(_JSON)
    outputs: Mapped[Any | None] = mapped_column(_JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    executor: Mapped[str | None] = mapped_column(String)
    host: Mapped[str | None] = mapped_column(String)
    error: Mapped[Any | None] = mapped_column(_JSON)
    reasons: Mapped[Any | None] = mapped_column(_JSON)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    map_parent: Mapped[str | None] = mapped_column(String)
    position: Mapped[int] = mapped_column(Integer)


class Edge(Base):
    __tablename__ = "edges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    src: Mapped[str] = mapped_column(String)
    dst: Mapped[str] = mapped_column(String)


class Attempt(Base):
    """One try of a node; `log` holds its captured stdout, stderr and logger lines."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    node: Mapped[str] = mapped_column(String)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    host: Mapped[str | None] = mapped_column(String)
    pid: Mapped[int | None] = mapped_column(Integer)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[Any | None] = mapped_column(_JSON)
    log: Mapped[str | None] = mapped_column(Text)


class Artifact(Base):
    """A value in the content-addressed store; it outlives the run that wrote it."""

    __tablename__ = "artifacts"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    serializer: Mapped[str] = mapped_column(String)
    serializer_version: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    run_id: Mapped[str | None] = mapped_column(String)
    node: Mapped[str | None] = mapped_column(String)
    # Small artifacts (flowlib.artifacts.INLINE_LIMIT) live here instead of the file store.
    data: Mapped[bytes | None] = mapped_column(LargeBinary)


class Fingerprint(Base):
    """An operator fingerprint's parts (flowlib.hashing.Fingerprint), stored once per digest."""

    __tablename__ = "fingerprints"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator: Mapped[str] = mapped_column(String)
    data: Mapped[Any] = mapped_column(_JSON)


class CacheEntry(Base):
    """A node's outputs keyed by its cache key, shared by every run."""

    __tablename__ = "cache_entries"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator: Mapped[str] = mapped_column(String)
    fingerprint: Mapped[str] = mapped_column(String(64))
    inputs: Mapped[dict[str, Any]] = mapped_column(_JSON)
    outputs: Mapped[dict[str, Any]] = mapped_column(_JSON)
    serializers: Mapped[Any] = mapped_column(_JSON)
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    run_id: Mapped[str] = mapped_column(String)
    node: Mapped[str] = mapped_column(String)


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    node: Mapped[str] = mapped_column(String)
    attempt: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String)
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int | None] = mapped_column(Integer)
    time: Mapped[float] = mapped_column(Float, default=_now)


class Checkpoint(Base):
    """A checkpoint saved by a node; keyed by root run so resumed runs find it."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    root_run_id: Mapped[str] = mapped_column(String, index=True)
    node: Mapped[str] = mapped_column(String)
    run_id: Mapped[str] = mapped_column(String)
    attempt: Mapped[int] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    time: Mapped[float] = mapped_column(Float, default=_now)


class Event(Base):
    """Append-only log of state changes; `id` orders events across writers."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String, index=True)
    node: Mapped[str | None] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    data: Mapped[Any | None] = mapped_column(_JSON)
    time: Mapped[float] = mapped_column(Float, default=_now)
