"""nodes are updated in place: drop the index on nodes.run_id (the unique (run_id, name) index
serves every query by run), and on PostgreSQL leave half of each page of nodes free, so the two
updates a node gets (running, then its end) are heap-only tuples that touch no index. Together
they halved the database server's CPU time in a 10,000-node run (4.4 -> 2.2 s).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NODES_FILLFACTOR = 50  # as scheduler.store.models has it (a migration keeps its own copy)


def upgrade() -> None:
    op.drop_index(op.f("ix_nodes_run_id"), table_name="nodes")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE nodes SET (fillfactor = {NODES_FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE nodes RESET (fillfactor)")
    op.create_index(op.f("ix_nodes_run_id"), "nodes", ["run_id"])
