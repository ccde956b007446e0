"""Add runs.stepped_at: when the run last took a new step (or was created).

Revision ID: 5a1c0e7d9b21
Revises: 40df5c556bb8
Create Date: 2026-12-03

A run is shown as ``stale`` when it has been running without a new step for
LRKEEPER_STALE_AFTER seconds. ``updated_at`` cannot tell that: an lr edit or a
metadata change touches it too. Existing runs start from their ``updated_at``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5a1c0e7d9b21"
down_revision: str | None = "40df5c556bb8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("stepped_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE runs SET stepped_at = updated_at")
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("stepped_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("stepped_at")
