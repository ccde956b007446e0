"""The tables, the statements built once, and the hot path's statements for its two drivers.

The hot path (service.runs.steps) runs :class:`HotStatement`s on sqlite3's cursor or
asyncpg's connection; everything else uses the SQLAlchemy Core statements here.
"""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from service.db import Database
from service.models import Event, RankReport, Run, Step, StepExtremes

runs_table: sa.Table = Run.__table__  # type: ignore[assignment]


steps_table: sa.Table = Step.__table__  # type: ignore[assignment]


events_table: sa.Table = Event.__table__  # type: ignore[assignment]


extremes_table: sa.Table = StepExtremes.__table__  # type: ignore[assignment]


rank_reports_table: sa.Table = RankReport.__table__  # type: ignore[assignment]


rank_report_columns = rank_reports_table.c


run_columns = runs_table.c


step_columns = steps_table.c


event_columns = events_table.c


extremes_columns = extremes_table.c


RUN_COLUMNS = (
    run_columns.run_id,
    run_columns.status,
    run_columns.step,
    run_columns.lr,
    run_columns.momentum,
    run_columns.scheduler,
    run_columns.param_groups,
    run_columns.state,
    run_columns.metadata,
    run_columns.ranks,
    run_columns.created_at,
    run_columns.updated_at,
    run_columns.stepped_at,
)


SELECT_RUN = sa.select(*RUN_COLUMNS).where(run_columns.run_id == sa.bindparam("run_id"))


SELECT_CURRENT_ROW = sa.select(
    step_columns.id,
    step_columns.step,
    step_columns.lr,
    step_columns.momentum,
    step_columns.state,
    step_columns.events,
    step_columns.stop,
).where(
    step_columns.run_pk == sa.bindparam("run_pk"),
    step_columns.step == sa.bindparam("step"),
    sa.not_(step_columns.superseded),
)


INSERT_STEP_ROW = sa.insert(steps_table)


# -- the hot path's statements ------------------------------------------------
#
# Step reports and lr reads run plain SQL on the driver itself (sqlite3's cursor in a
# worker thread or on the event loop, asyncpg's connection on the loop): nothing to
# compile, cache-key or wrap per call, and each JSON value is serialized once by us.
# Values are stored exactly as SQLAlchemy's JSON and timestamp types store them, so
# every other reader decodes them as usual. Each statement is written once, with
# ``:name`` parameters, and every column it returns is named: rows are read by name.


@dataclass(frozen=True)
class HotStatement:
    """One hot-path statement as each driver runs it: sqlite3 takes ``:name`` as
    written, asyncpg wants ``$n`` with the values in order (:meth:`asyncpg_args`)."""

    sqlite: str
    asyncpg: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, sql: str, *, postgresql_suffix: str = "") -> "HotStatement":
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        numbered = re.sub(r"(?<![:\w]):(\w+)", number, sql + postgresql_suffix)
        return cls(sqlite=sql, asyncpg=numbered, names=tuple(names))

    def asyncpg_args(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


# -- what a unit of work (service.runs.steps) asks of a driver ------------------


@dataclass(frozen=True)
class Fetch:
    """Run ``statement`` and send back its first row (or None)."""

    statement: HotStatement
    values: Mapping[str, Any]


@dataclass(frozen=True)
class FetchRows:
    """Run ``statement`` and send back all its rows."""

    statement: HotStatement
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Execute:
    """Run ``statement`` for its effect (an insert, a delete); the driver sends back nothing."""

    statement: HotStatement
    values: Mapping[str, Any]


# One statement, so one snapshot: the run's key and its recorded row for ``step`` on the
# current line, if there is one (NULL step columns when the run has not reached ``step``).
RECORDED_STEP = HotStatement.of(
    """
SELECT runs.id AS run_pk, steps.step, steps.lr, steps.momentum, steps.events, steps.stop
FROM runs LEFT OUTER JOIN steps
  ON steps.run_pk = runs.id AND steps.step = :step AND NOT steps.superseded
WHERE runs.run_id = :run_id"""
)

# RECORDED_STEP for a report naming its rank: also the run's ranks and that rank's report.
RECORDED_RANK_STEP = HotStatement.of(
    """
SELECT runs.id AS run_pk, runs.ranks, steps.step, steps.lr, steps.momentum, steps.events,
  steps.stop, rank_reports.metrics AS rank_metrics
FROM runs LEFT OUTER JOIN steps
  ON steps.run_pk = runs.id AND steps.step = :step AND NOT steps.superseded
LEFT OUTER JOIN rank_reports
  ON rank_reports.run_pk = runs.id AND rank_reports.step = :step AND rank_reports.rank = :rank
WHERE runs.run_id = :run_id"""
)

# What a reader waiting for a ranked step needs: where the run is, and the step's reports.
RANKED_STEP_STATUS = HotStatement.of(
    """
SELECT runs.step AS run_step, runs.ranks,
  (SELECT count(*) FROM rank_reports
   WHERE rank_reports.run_pk = runs.id AND rank_reports.step = :step) AS reported,
  (SELECT min(reported_at) FROM rank_reports
   WHERE rank_reports.run_pk = runs.id AND rank_reports.step = :step) AS first_reported_at
FROM runs WHERE runs.run_id = :run_id"""
)

CURRENT_LR = HotStatement.of("SELECT step, lr, momentum FROM runs WHERE run_id = :run_id")

# SQLite needs no FOR UPDATE: the transaction's BEGIN IMMEDIATE holds the write lock.
LOCK_RUN = HotStatement.of(
    "SELECT id AS run_pk, step, status, scheduler, param_groups, state, ranks FROM runs"
    " WHERE run_id = :run_id",
    postgresql_suffix=" FOR UPDATE",
)

CURRENT_ROW = HotStatement.of(
    """
SELECT step, lr, momentum, events, stop FROM steps
WHERE run_pk = :run_pk AND step = :step AND NOT superseded"""
)

EVENT_RECORDED = HotStatement.of(
    "SELECT id FROM events WHERE run_pk = :run_pk AND step = :step AND kind = :kind"
)

_INSERT_STEP_SQL = """
INSERT INTO steps
  (run_pk, step, lr, momentum, state, metrics, worker, events, stop, superseded, recorded_at)
VALUES
  (:run_pk, :step, :lr, :momentum, :state, :metrics, :worker, :events, :stop, false, :now)"""

_UPDATE_RUN_SQL = """
UPDATE runs SET step = :step, lr = :lr, momentum = :momentum, state = :state,
  updated_at = :now, stepped_at = :now
WHERE id = :run_pk"""

INSERT_STEP = HotStatement.of(_INSERT_STEP_SQL)

UPDATE_RUN = HotStatement.of(_UPDATE_RUN_SQL)

# PostgreSQL only: the step's INSERT as a data-modifying CTE of the run's UPDATE, so one
# new step is one round trip; both happen whether or not the UPDATE reads the CTE.
RECORD_ONE_STEP = HotStatement.of(f"WITH recorded_step AS ({_INSERT_STEP_SQL}) {_UPDATE_RUN_SQL}")

INSERT_EVENT = HotStatement.of(
    """
INSERT INTO events (run_pk, step, kind, detail, recorded_at)
VALUES (:run_pk, :step, :kind, :detail, :now)"""
)


def sqlite_timestamp(moment: datetime) -> str:
    """SQLAlchemy's storage format for DateTime on SQLite; ``moment`` is UTC (:func:`utc_now`)."""
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def json_from_text(text: str | None) -> Any:
    """A JSON column as both hot-path drivers return it (text; asyncpg has no jsonb codec set)."""
    return None if text is None else json.loads(text)


def json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def dialect_insert(database: Database, table: sa.Table) -> Any:
    if database.dialect == "postgresql":
        return postgresql_dialect.insert(table)
    return sqlite_dialect.insert(table)


def event_row(run_pk: int, step: int, event: Mapping[str, Any], recorded_at: Any) -> dict[str, Any]:
    """A hot-path event row: ``detail`` as JSON text, ``now`` in the driver's timestamp form."""
    return {
        "run_pk": run_pk,
        "step": step,
        "kind": event["kind"],
        "detail": json_text(event["detail"]),
        "now": recorded_at,
    }


def insert_events(
    connection: Connection, run_pk: int, events: Sequence[tuple[int, dict[str, Any]]], now: datetime
) -> None:
    """Record events outside the hot path (creating a run, lr edits, rewinds, reopening)."""
    if events:
        connection.execute(
            sa.insert(events_table),
            [
                {
                    "run_pk": run_pk,
                    "step": step,
                    "kind": event["kind"],
                    "detail": event["detail"],
                    "recorded_at": now,
                }
                for step, event in events
            ],
        )
