"""drop the index on nodes.cache_key: no query reads nodes by it, and keeping it up to date
was a sixth of the pages each scheduling step wrote

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_nodes_cache_key"), table_name="nodes")


def downgrade() -> None:
    op.create_index(op.f("ix_nodes_cache_key"), "nodes", ["cache_key"])
