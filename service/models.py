"""The three tables: a run's current state, its step history, its events.

Every JSON value is codec-encoded before it gets here (service.schedules.codec),
so NaN and infinities never reach PostgreSQL, whose JSON types reject them.
A Step row holds the engine state *after* that step, which makes replaying a
step and rewinding to it lookups instead of recomputation.
"""

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only turns INTEGER PRIMARY KEY into an autoincrementing rowid alias.
BigIntegerPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware timestamp that always comes back in UTC.

    SQLite keeps no offset, so values read from it are naive; they were written
    in UTC, and this type says so instead of leaving every reader to remember.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    """One training job's schedule as it stands after its current step."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(sa.String(128), unique=True, nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    step: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    # The normalized config (defaults filled in), so sameness on PUT is a comparison.
    scheduler: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    param_groups: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    # Engine state after the current step, including any POST /lr edit since.
    state: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    lr: Mapped[list[Any]] = mapped_column(JSONType, nullable=False)
    momentum: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, nullable=False)
    # {"world_size", "reduce", "timeout_s"} when a metric-driven step waits for every rank.
    ranks: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # The last new step (creation until the first): what ``stale`` is computed from.
    stepped_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class Step(Base):
    """What one step answered, kept so a replay answers exactly the same."""

    __tablename__ = "steps"
    __table_args__ = (
        # One current row per step; rows a rewind superseded stay beside it.
        sa.Index(
            "uq_steps_run_pk_step_current",
            "run_pk",
            "step",
            unique=True,
            sqlite_where=sa.text("NOT superseded"),
            postgresql_where=sa.text("NOT superseded"),
        ),
        sa.Index("ix_steps_run_pk_step", "run_pk", "step", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(sa.ForeignKey("runs.id"), nullable=False)
    step: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    lr: Mapped[list[Any]] = mapped_column(JSONType, nullable=False)
    momentum: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    # On a catch-up the reported metrics go on the last row; the others hold {}.
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    worker: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    events: Mapped[list[Any]] = mapped_column(JSONType, nullable=False)
    stop: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    superseded: Mapped[bool] = mapped_column(
        sa.Boolean, nullable=False, default=False, server_default=sa.false()
    )
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class Event(Base):
    """Something worth telling a human: a plateau reduction, a restart, an edit, a rewind."""

    __tablename__ = "events"
    __table_args__ = (sa.Index("ix_events_run_pk_id", "run_pk", "id"),)

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(sa.ForeignKey("runs.id"), nullable=False)
    step: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class RankReport(Base):
    """One rank's metrics for one step of a run with ``ranks`` (service.runs.ranks).

    A metric-driven step is decided once every rank has a row here (or its timeout
    passed), so the rows are the waiting state itself: in the database, where every
    replica sees them. They stay after the decision, so a rank repeating its report is
    told apart from one changing it; a rewind deletes the rows past its step.
    """

    __tablename__ = "rank_reports"

    run_pk: Mapped[int] = mapped_column(sa.ForeignKey("runs.id"), primary_key=True)
    step: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    rank: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    # The rank's metrics, codec-encoded, as canonical JSON text (sorted keys), so sameness
    # is a string comparison.
    metrics: Mapped[str] = mapped_column(sa.Text, nullable=False)
    worker: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class StepExtremes(Base):
    """The lowest and highest value of every series over one aligned block of steps.

    Kept so a thinned history of a long run reads a few thousand small rows instead
    of every step (service.runs.extremes says what a block holds and when it is
    written). Block ``bucket`` of ``width`` covers steps ``bucket·width`` to
    ``(bucket + 1)·width − 1`` of the run's current line; it exists only once the run
    has stepped past its last step, and a rewind to before that deletes it.
    """

    __tablename__ = "step_extremes"

    run_pk: Mapped[int] = mapped_column(sa.ForeignKey("runs.id"), primary_key=True)
    width: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    # {series: [lowest, its step, highest, its step]}, values codec-encoded.
    extremes: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
