"""Add runs.ranks and rank_reports: one metric-driven decision from every rank's report.

Revision ID: 9d2f6a41c8e3
Revises: 7c3e91b2d4f0
Create Date: 2026-12-17

Existing runs have no ``ranks`` (NULL): their steps are decided by the first report,
as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9d2f6a41c8e3"
down_revision: str | None = "7c3e91b2d4f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column(
                "ranks",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    op.create_table(
        "rank_reports",
        sa.Column("run_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("worker", sa.String(length=256), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name=op.f("fk_rank_reports_run_pk_runs")),
        sa.PrimaryKeyConstraint("run_pk", "step", "rank", name=op.f("pk_rank_reports")),
    )


def downgrade() -> None:
    op.drop_table("rank_reports")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("ranks")
