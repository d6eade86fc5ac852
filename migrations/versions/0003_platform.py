"""the platform: plans, streamed logs, tokens, servers, deployments, schedules, sweeps; runs gain
their plan, code snapshot, priority, server, deployment and sweep

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("plan_digest", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("snapshot", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch.add_column(sa.Column("server", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("deployment", sa.String(), nullable=True))
        batch.add_column(sa.Column("deployment_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sweep", sa.String(), nullable=True))
        batch.add_column(sa.Column("trial", sa.Integer(), nullable=True))
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.create_index("ix_runs_queue", "runs", ["status", "priority", "created_at"])
    op.create_table(
        "plans",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_plans")),
    )
    op.create_table(
        "log_chunks",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_log_chunks_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_chunks")),
    )
    op.create_index(op.f("ix_log_chunks_run_id"), "log_chunks", ["run_id"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("hash", name=op.f("uq_tokens_hash")),
    )
    op.create_index(op.f("ix_tokens_name"), "tokens", ["name"])
    op.create_table(
        "servers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("lease_expires_at", sa.Float(), nullable=False),
        sa.Column("stopped_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_servers")),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("workflow", sa.String(), nullable=False),
        sa.Column("file", sa.String(), nullable=False),
        sa.Column("snapshot", sa.String(length=64), nullable=False),
        sa.Column("parameters", JSON, nullable=False),
        sa.Column("params", JSON, nullable=True),
        sa.Column("schedule", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("user", sa.String(), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_deployments_name_version")),
    )
    op.create_table(
        "schedule_ticks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment", sa.String(), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_ticks")),
        sa.UniqueConstraint("deployment", "due_at", name=op.f("uq_schedule_ticks_deployment_due_at")),
    )
    op.create_table(
        "sweeps",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("workflow", sa.String(), nullable=False),
        sa.Column("file", sa.String(), nullable=False),
        sa.Column("objective", sa.String(), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("storage", sa.String(), nullable=False),
        sa.Column("settings", JSON, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sweeps")),
    )


def downgrade() -> None:
    for table in ("sweeps", "schedule_ticks", "deployments", "servers", "tokens", "log_chunks", "plans"):
        op.drop_table(table)
    op.drop_index("ix_runs_queue", table_name="runs")
    op.drop_index("ix_runs_created_at", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for column in (
            "trial",
            "sweep",
            "deployment_version",
            "deployment",
            "server",
            "priority",
            "snapshot",
            "plan_digest",
        ):
            batch.drop_column(column)
