"""The run database's tables (SQLite or PostgreSQL), as SQLAlchemy Core tables.

Core, not the ORM: every query reads plain rows and nothing is ever mapped to
objects, and importing the ORM and declaring classes cost a fifth of a run's start.
Times are float seconds since the epoch, so both backends store and compare them
the same way without timezone handling.
"""

from __future__ import annotations

from time import time as _now
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    false,
    text,
)

__all__ = [
    "artifacts",
    "attempts",
    "cache_entries",
    "checkpoints",
    "deployments",
    "edges",
    "events",
    "fingerprints",
    "log_chunks",
    "metadata",
    "metrics",
    "nodes",
    "plans",
    "runs",
    "schedule_ticks",
    "servers",
    "sweeps",
    "tokens",
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
metadata = MetaData(naming_convention=NAMING_CONVENTION)

NODES_FILLFACTOR = 50  # percent of a PostgreSQL page that inserts of nodes fill

# none_as_null: a Python None is stored as SQL NULL (not the JSON text 'null'),
# so `column IS NULL` finds it.
_JSON = JSON(none_as_null=True)
# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


def _required(name: str, *args: Any, **kw: Any) -> Column:
    return Column(name, *args, nullable=False, **kw)


def _optional(name: str, *args: Any, **kw: Any) -> Column:
    return Column(name, *args, nullable=True, **kw)


def _id() -> Column:
    return Column("id", Integer, primary_key=True, autoincrement=True)


def _run_fk(*, index: bool = True) -> Column:
    return _required("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), index=index)


# One execution of a workflow; a resumed run points at the run it resumed.
runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    _required("workflow", String),
    _required("file", String),
    _required("params", _JSON),
    _required("status", String(16), index=True),
    _required("created_at", Float, default=_now),
    _optional("started_at", Float),
    _optional("ended_at", Float),
    _required("host", String),
    _required("user", String),
    _optional("pid", Integer),
    _optional("heartbeat_at", Float),
    _optional("resumed_from", String(32), ForeignKey("runs.id", ondelete="SET NULL")),
    _required("root_run_id", String(32)),
    _optional("executor", String),
    _optional("error", Text),
    _optional("outputs", _JSON),
    _required("cancel_requested", Boolean, default=False, server_default=false()),
    _optional("options", _JSON),
    # 0003: the platform
    _optional("plan_digest", String(64)),  # the plan it executes (`plans`), for servers and `flow why`
    _optional("snapshot", String(64)),  # digest of the code snapshot a server runs it from
    _required("priority", Integer, default=0, server_default=text("0")),
    _optional("server", String(64)),  # the server that claimed it (`servers`)
    _optional("deployment", String),
    _optional("deployment_version", Integer),
    _optional("sweep", String),
    _optional("trial", Integer),
    Index("ix_runs_created_at", "created_at"),
    Index("ix_runs_queue", "status", "priority", "created_at"),
)

# A compiled plan (flowlib.plan.Plan) by digest: runs of the same code and parameters share one.
plans = Table(
    "plans",
    metadata,
    Column("digest", String(64), primary_key=True),
    _required("data", Text),
    _required("created_at", Float, default=_now),
)

# One node of a run's DAG, map items included.
nodes = Table(
    "nodes",
    metadata,
    _id(),
    _run_fk(index=False),  # the unique (run_id, name) index serves queries by run: see migration 0004
    _required("name", String),
    _required("operator", String),
    _required("status", String(16)),
    _optional("cache_key", String(64)),  # not indexed: see migration 0002
    _optional("fingerprint", String(64)),  # digest; the parts are in `fingerprints`
    _optional("inputs", _JSON),
    _optional("outputs", _JSON),
    _required("attempts", Integer, default=0, server_default=text("0")),
    _required("cached", Boolean, default=False, server_default=false()),
    _optional("executor", String),
    _optional("host", String),
    _optional("error", _JSON),
    _optional("reasons", _JSON),
    _optional("started_at", Float),
    _optional("ended_at", Float),
    _optional("duration_s", Float),
    _optional("map_parent", String),
    _required("position", Integer),
    UniqueConstraint("run_id", "name"),
)
# room on each page for a node's updates (migration 0004); a DDL event rather than the table's
# `postgresql_with`, which would import the PostgreSQL dialect into every `flow` command
event.listen(
    nodes,
    "after_create",
    DDL(f"ALTER TABLE %(table)s SET (fillfactor = {NODES_FILLFACTOR})").execute_if(dialect="postgresql"),
)

edges = Table(
    "edges",
    metadata,
    _id(),
    _run_fk(),
    _required("src", String),
    _required("dst", String),
)

# One try of a node; `log` holds its captured stdout, stderr and logger lines.
attempts = Table(
    "attempts",
    metadata,
    _id(),
    _run_fk(),
    _required("node", String),
    _required("number", Integer),
    _required("status", String(16)),
    _optional("started_at", Float),
    _optional("ended_at", Float),
    _optional("host", String),
    _optional("pid", Integer),
    _optional("exit_code", Integer),
    _optional("signal", Integer),
    _optional("error", _JSON),
    _optional("log", Text),
)

# A value in the content-addressed store; it outlives the run that wrote it.
artifacts = Table(
    "artifacts",
    metadata,
    Column("digest", String(64), primary_key=True),
    _required("serializer", String),
    _required("serializer_version", Integer),
    _required("size", BigInteger),
    _required("created_at", Float, default=_now),
    _optional("run_id", String),
    _optional("node", String),
    # Small artifacts (flowlib.artifacts.INLINE_LIMIT) live here instead of the file store.
    _optional("data", LargeBinary),
)

# An operator fingerprint's parts (flowlib.hashing.Fingerprint), stored once per digest.
fingerprints = Table(
    "fingerprints",
    metadata,
    Column("digest", String(64), primary_key=True),
    _required("operator", String),
    _required("data", _JSON),
)

# A node's outputs keyed by its cache key, shared by every run.
cache_entries = Table(
    "cache_entries",
    metadata,
    Column("key", String(64), primary_key=True),
    _required("operator", String),
    _required("fingerprint", String(64)),
    _required("inputs", _JSON),
    _required("outputs", _JSON),
    _required("serializers", _JSON),
    _required("created_at", Float, default=_now),
    _required("run_id", String),
    _required("node", String),
)

metrics = Table(
    "metrics",
    metadata,
    _id(),
    _run_fk(),
    _required("node", String),
    _required("attempt", Integer),
    _required("name", String),
    _required("value", Float),
    _optional("step", Integer),
    _required("time", Float, default=_now),
)

# A checkpoint saved by a node; keyed by root run so resumed runs find it.
checkpoints = Table(
    "checkpoints",
    metadata,
    _id(),
    _required("root_run_id", String, index=True),
    _required("node", String),
    _required("run_id", String),
    _required("attempt", Integer),
    _optional("step", Integer),
    _required("digest", String(64)),
    _required("time", Float, default=_now),
)

# Append-only log of state changes; `id` orders events across writers.
events = Table(
    "events",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    _required("run_id", String, index=True),
    _optional("node", String),
    _required("kind", String),
    _optional("data", _JSON),
    _required("time", Float, default=_now),
)


# What a running attempt printed so far, streamed while it runs (the rest lands in `attempts.log`).
log_chunks = Table(
    "log_chunks",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    _run_fk(),
    _required("node", String),
    _required("attempt", Integer),
    _required("text", Text),
    _required("time", Float, default=_now),
)

# API tokens of `flow token create`: only a hash of each is kept.
tokens = Table(
    "tokens",
    metadata,
    _id(),
    _required("name", String, index=True),
    _required("hash", String(64), unique=True),
    _required("admin", Boolean, default=False, server_default=false()),
    _required("created_at", Float, default=_now),
    _optional("revoked_at", Float),
)

# The `flow server` processes of a pool and their leases.
servers = Table(
    "servers",
    metadata,
    Column("id", String(64), primary_key=True),
    _required("host", String),
    _required("pid", Integer),
    _optional("url", String),
    _required("started_at", Float, default=_now),
    _required("lease_expires_at", Float),
    _optional("stopped_at", Float),
)

# A workflow registered with `flow deploy`: every deploy under a name is a new version.
deployments = Table(
    "deployments",
    metadata,
    _id(),
    _required("name", String),
    _required("version", Integer),
    _required("workflow", String),
    _required("file", String),
    _required("snapshot", String(64)),
    _required("parameters", _JSON),  # [{"name", "type", "default"}]
    _optional("params", _JSON),  # fixed parameters of its schedule and launches
    _optional("schedule", String),
    _required("created_at", Float, default=_now),
    _required("user", String),
    _required("deleted", Boolean, default=False, server_default=false()),
    UniqueConstraint("name", "version"),
)

# One row per due time of a schedule: whoever inserts it runs it (so exactly one server does).
schedule_ticks = Table(
    "schedule_ticks",
    metadata,
    _id(),
    _required("deployment", String),
    _required("due_at", Float),
    _optional("run_id", String(32)),
    _required("created_at", Float, default=_now),
    UniqueConstraint("deployment", "due_at"),
)

# A `flow sweep`: its Optuna study lives in Optuna's own storage (`storage`).
sweeps = Table(
    "sweeps",
    metadata,
    Column("name", String, primary_key=True),
    _required("workflow", String),
    _required("file", String),
    _required("objective", String),
    _required("direction", String(16)),
    _required("storage", String),
    _required("settings", _JSON),
    _required("created_at", Float, default=_now),
)
