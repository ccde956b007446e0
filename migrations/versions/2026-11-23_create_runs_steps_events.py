"""Create runs, steps and events.

Revision ID: 40df5c556bb8
Revises:
Create Date: 2026-11-23

Types are spelled out here rather than imported from service.models: a migration
is a record of what the schema was at this revision, and must not change when
the models do.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "40df5c556bb8"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def json_type() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def big_integer_pk() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", big_integer_pk(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("scheduler", json_type(), nullable=False),
        sa.Column("param_groups", json_type(), nullable=False),
        sa.Column("state", json_type(), nullable=False),
        sa.Column("lr", json_type(), nullable=False),
        sa.Column("momentum", json_type(), nullable=True),
        sa.Column("metadata", json_type(), nullable=False),
        sa.Column("created_at", timestamp(), nullable=False),
        sa.Column("updated_at", timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("run_id", name=op.f("uq_runs_run_id")),
    )
    op.create_table(
        "events",
        sa.Column("id", big_integer_pk(), autoincrement=True, nullable=False),
        sa.Column("run_pk", big_integer_pk(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", json_type(), nullable=False),
        sa.Column("recorded_at", timestamp(), nullable=False),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name=op.f("fk_events_run_pk_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_run_pk_id", "events", ["run_pk", "id"], unique=False)
    op.create_table(
        "steps",
        sa.Column("id", big_integer_pk(), autoincrement=True, nullable=False),
        sa.Column("run_pk", big_integer_pk(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("lr", json_type(), nullable=False),
        sa.Column("momentum", json_type(), nullable=True),
        sa.Column("state", json_type(), nullable=False),
        sa.Column("metrics", json_type(), nullable=False),
        sa.Column("worker", sa.String(length=256), nullable=True),
        sa.Column("events", json_type(), nullable=False),
        sa.Column("stop", sa.Boolean(), nullable=True),
        sa.Column("superseded", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("recorded_at", timestamp(), nullable=False),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name=op.f("fk_steps_run_pk_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
    )
    op.create_index("ix_steps_run_pk_step", "steps", ["run_pk", "step", "id"], unique=False)
    # Partial: a rewind marks rows superseded and writes the step again beside them.
    op.create_index(
        "uq_steps_run_pk_step_current",
        "steps",
        ["run_pk", "step"],
        unique=True,
        sqlite_where=sa.text("NOT superseded"),
        postgresql_where=sa.text("NOT superseded"),
    )


def downgrade() -> None:
    op.drop_index("uq_steps_run_pk_step_current", table_name="steps")
    op.drop_index("ix_steps_run_pk_step", table_name="steps")
    op.drop_table("steps")
    op.drop_index("ix_events_run_pk_id", table_name="events")
    op.drop_table("events")
    op.drop_table("runs")
