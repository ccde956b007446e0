"""The tables, the statements built once, and the hot path's driver SQL for each driver.

The hot path (service.runs.steps) runs plain SQL on each driver's own cursor or
connection; everything else uses the SQLAlchemy Core statements here.
"""

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from service.db import Database
from service.models import Event, Run, Step

runs_table: sa.Table = Run.__table__  # type: ignore[assignment]


steps_table: sa.Table = Step.__table__  # type: ignore[assignment]


events_table: sa.Table = Event.__table__  # type: ignore[assignment]


run_columns = runs_table.c


step_columns = steps_table.c


event_columns = events_table.c


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
    run_columns.created_at,
    run_columns.updated_at,
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


INSERT_STEP = sa.insert(steps_table)


#
# Reporting a step and reading the lr run as driver SQL on the DBAPI cursor of the
# connection SQLAlchemy checked out (:func:`driver_cursor`), inside the same engines,
# pools and transactions as everything else: nothing to compile, cache-key, bind-process
# or wrap in a Result per call, and each JSON value is serialized once by us (the run's
# new state goes into both the step row and the run row). The values are stored
# exactly as SQLAlchemy's JSON and timestamp types store them, so every other reader
# decodes them as usual. Written with ``:name`` parameters (sqlite3's style) and
# rewritten to psycopg's ``%(name)s`` for PostgreSQL.

# One statement, so one snapshot: the run's key and its recorded row for ``step`` on the
# current line, if there is one (NULL columns when the run has not reached ``step``).
SQL_RECORDED_STEP = """
SELECT runs.id, steps.step, steps.lr, steps.momentum, steps.events, steps.stop
FROM runs LEFT OUTER JOIN steps
  ON steps.run_pk = runs.id AND steps.step = :step AND NOT steps.superseded
WHERE runs.run_id = :run_id"""


SQL_CURRENT_LR = "SELECT step, lr, momentum FROM runs WHERE run_id = :run_id"


SQL_LOCK_RUN = "SELECT id, step, scheduler, param_groups, state FROM runs WHERE run_id = :run_id"


SQL_CURRENT_ROW = """
SELECT step, lr, momentum, events, stop FROM steps
WHERE run_pk = :run_pk AND step = :step AND NOT superseded"""


SQL_INSERT_STEP = """
INSERT INTO steps
  (run_pk, step, lr, momentum, state, metrics, worker, events, stop, superseded, recorded_at)
VALUES
  (:run_pk, :step, :lr, :momentum, :state, :metrics, :worker, :events, :stop, false, :now)"""


SQL_INSERT_EVENT = """
INSERT INTO events (run_pk, step, kind, detail, recorded_at)
VALUES (:run_pk, :step, :kind, :detail, :now)"""


SQL_UPDATE_RUN = """
UPDATE runs SET step = :step, lr = :lr, momentum = :momentum, state = :state, updated_at = :now
WHERE id = :run_pk"""


# PostgreSQL: the step's INSERT as a data-modifying CTE of the run's UPDATE, so one new
# step is one round trip; both happen whether or not the UPDATE reads the CTE.
SQL_RECORD_ONE_STEP = f"WITH recorded_step AS ({SQL_INSERT_STEP}) {SQL_UPDATE_RUN}"


def _pyformat(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s``."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


def _sqlite_timestamp(moment: datetime) -> str:
    """SQLAlchemy's storage format for DateTime on SQLite; ``moment`` is UTC (:func:`utc_now`)."""
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _same(value: Any) -> Any:
    return value


def _sqlite_boolean(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def json_from_text(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class _DriverSql:
    """The reads and event rows both drivers behind SQLAlchemy share, and their value
    conversions. Step writes run on SQLite's cursor (the statements above, as written)
    or on asyncpg (:data:`ASYNCPG_SQL`); psycopg never writes a step."""

    recorded_step: str
    current_lr: str
    insert_event: str
    timestamp: Callable[[datetime], Any]
    json_value: Callable[[Any], Any]  # a JSON column as the driver returns it -> Python
    boolean: Callable[[Any], bool | None]


DRIVER_SQL: dict[str, _DriverSql] = {
    "sqlite": _DriverSql(
        recorded_step=SQL_RECORDED_STEP,
        current_lr=SQL_CURRENT_LR,
        insert_event=SQL_INSERT_EVENT,
        timestamp=_sqlite_timestamp,
        json_value=json_from_text,  # JSON columns are TEXT
        boolean=_sqlite_boolean,
    ),
    "postgresql": _DriverSql(
        recorded_step=_pyformat(SQL_RECORDED_STEP),
        current_lr=_pyformat(SQL_CURRENT_LR),
        insert_event=_pyformat(SQL_INSERT_EVENT),
        timestamp=_same,
        json_value=_same,  # psycopg decodes jsonb itself
        boolean=_same,
    ),
}


@dataclass(frozen=True)
class _Numbered:
    """A ``:name`` statement as asyncpg's ``$n`` one, with the order its values go in."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: str) -> "_Numbered":
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        return cls(re.sub(r"(?<![:\w]):(\w+)", number, statement), tuple(names))

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


@dataclass(frozen=True)
class _AsyncpgSql:
    """The hot path's statements for asyncpg, which returns JSON columns as text."""

    recorded_step: _Numbered
    current_lr: _Numbered
    lock_run: _Numbered
    current_row: _Numbered
    insert_step: _Numbered
    update_run: _Numbered
    insert_event: _Numbered
    record_one_step: _Numbered
    timestamp: Callable[[datetime], Any]
    json_value: Callable[[Any], Any]
    boolean: Callable[[Any], bool | None]


ASYNCPG_SQL = _AsyncpgSql(
    recorded_step=_Numbered.of(SQL_RECORDED_STEP),
    current_lr=_Numbered.of(SQL_CURRENT_LR),
    lock_run=_Numbered.of(SQL_LOCK_RUN + " FOR UPDATE"),
    current_row=_Numbered.of(SQL_CURRENT_ROW),
    insert_step=_Numbered.of(SQL_INSERT_STEP),
    update_run=_Numbered.of(SQL_UPDATE_RUN),
    insert_event=_Numbered.of(SQL_INSERT_EVENT),
    record_one_step=_Numbered.of(SQL_RECORD_ONE_STEP),
    timestamp=_same,
    json_value=json_from_text,
    boolean=_same,
)


def driver_cursor(
    connection: Connection, statement: str, parameters: Mapping[str, Any] | Sequence[Any]
) -> Any:
    """Run ``statement`` on the DBAPI connection ``connection`` has checked out.

    Same connection, same transaction, none of SQLAlchemy's per-statement work. A
    driver error goes through SQLAlchemy's own handling, as if ``exec_driver_sql``
    had raised it: wrapped in a DBAPIError (so :func:`_is_transient` sees its sqlstate
    or sqlite message), and on a connection the server dropped the connection and the
    pool's older ones are invalidated (``connection_invalidated``, retried).
    """
    driver_connection = connection.connection.driver_connection
    assert driver_connection is not None
    cursor = driver_connection.cursor()
    try:
        if isinstance(parameters, Mapping):
            cursor.execute(statement, parameters)
        else:
            cursor.executemany(statement, parameters)
    except connection.dialect.loaded_dbapi.Error as error:
        # The one private call here: it is exactly what exec_driver_sql does on an error.
        connection._handle_dbapi_exception(error, statement, parameters, cursor, None)
    return cursor


def driver_row(
    connection: Connection, statement: str, parameters: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """The first row ``statement`` returns (a plain tuple), or None."""
    cursor = driver_cursor(connection, statement, parameters)
    try:
        row: tuple[Any, ...] | None = cursor.fetchone()
    except connection.dialect.loaded_dbapi.Error as error:
        connection._handle_dbapi_exception(error, statement, parameters, cursor, None)
    return row


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def dialect_insert(database: Database, table: sa.Table) -> Any:
    if database.dialect == "postgresql":
        return postgresql_dialect.insert(table)
    return sqlite_dialect.insert(table)


def event_row(run_pk: int, step: int, event: Mapping[str, Any], recorded_at: Any) -> dict[str, Any]:
    return {
        "run_pk": run_pk,
        "step": step,
        "kind": event["kind"],
        "detail": json_text(event["detail"]),
        "now": recorded_at,
    }


def insert_events(
    connection: Connection,
    sql: _DriverSql,
    run_pk: int,
    events: Sequence[tuple[int, dict[str, Any]]],
    now: datetime,
) -> None:
    """Record events outside the hot path (creating a run, lr edits, rewinds)."""
    recorded_at = sql.timestamp(now)
    rows = [event_row(run_pk, step, event, recorded_at) for step, event in events]
    if rows:
        driver_cursor(connection, sql.insert_event, rows)
