"""Add step_extremes: per-block lowest and highest values, for thinned history.

Revision ID: 7c3e91b2d4f0
Revises: 5a1c0e7d9b21
Create Date: 2026-12-10

Nothing is backfilled: blocks a run passed before this revision have no row, and
a thinned read fills them from finer blocks or from the steps themselves.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7c3e91b2d4f0"
down_revision: str | None = "5a1c0e7d9b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "step_extremes",
        sa.Column("run_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column(
            "extremes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name=op.f("fk_step_extremes_run_pk_runs")),
        sa.PrimaryKeyConstraint("run_pk", "width", "bucket", name=op.f("pk_step_extremes")),
    )


def downgrade() -> None:
    op.drop_table("step_extremes")
