"""The use cases: the only module that begins transactions, locks rows and commits.

Each public function is one unit of work that has committed (or changed
nothing) before it returns, so a 200 built from its result is durable.

- Writes: ``with database.write_lock, database.engine.begin()``; the run's row
  is locked with ``SELECT ... FOR UPDATE`` (PostgreSQL; on SQLite the
  transaction's ``BEGIN IMMEDIATE`` already holds the database's write lock and
  no ``FOR UPDATE`` is written) before anything that depends on it is
  computed. Serialization failures, deadlocks and dropped connections are
  retried by :func:`retry_on_conflict`; nothing else is.
- Reads: ``database.read_engine``, in autocommit (see service.db). A step that
  is already recorded (every rank but the first reports each step) is answered
  from the read path, so replays never queue behind writers: a replay is one
  statement, and a new step (per :class:`RecordedSteps`, the run has not reached
  it) goes straight to the lock-insert-update-commit.
- The engine never sees the database: a run is restored from its stored state,
  stepped, and its new state written back. Every stored JSON value is
  codec-encoded (non-finite floats as strings).

The hot path (:func:`report_step`, :func:`current_lr`) runs a handful of driver
SQL statements written out below: on SQLite on the sqlite3 cursor of SQLAlchemy's
connection, in a worker thread; on PostgreSQL awaited on asyncpg's pool
(``database.hot_path_pool``), on the event loop, with the same transaction and
lock discipline. Everything else uses SQLAlchemy Core, in FastAPI's thread pool.
"""

import base64
import binascii
import contextlib
import functools
import inspect
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import asyncpg
import sqlalchemy as sa
import tenacity
from anyio import to_thread
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Row

from service import schedules
from service.db import Database, LoopReader
from service.models import Event, Run, Step
from service.problems import (
    InvalidRequest,
    NotEnoughData,
    NotFound,
    RunConflict,
    ScheduleEnded,
    StepOutOfOrder,
)
from service.schedules import range_test
from service.schedules.base import ScheduleEvent, Scheduler, StepOutcome
from service.schedules.codec import decode_floats, encode_floats
from service.schemas import LrChange, PreviewRequest, RunCreate, RunPatch, StepReport

runs_table: sa.Table = Run.__table__  # type: ignore[assignment]
steps_table: sa.Table = Step.__table__  # type: ignore[assignment]
events_table: sa.Table = Event.__table__  # type: ignore[assignment]

RANGE_TEST_TYPE = range_test.LRRangeTest.type_name


# -- retrying ------------------------------------------------------------------

# serialization_failure, deadlock_detected; the server ending the session (admin_shutdown,
# crash_shutdown, cannot_connect_now), which asyncpg reports as an error of its own.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})
_ATTEMPTS = 5


def _is_transient(error: BaseException) -> bool:
    """Serialization failures, deadlocks, SQLite's busy timeout running out, and a pooled
    connection the server had dropped (db.py does not pre-ping; SQLAlchemy has discarded
    the pool's connections by now, so the next attempt gets a fresh one).

    sqlite3's own OperationalError arrives unwrapped from db.py's BEGIN IMMEDIATE hook.
    """
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        original: BaseException | None = error.orig
    else:
        original = error
    if getattr(original, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    if isinstance(original, _ASYNCPG_CONNECTION_LOST):
        return True
    return isinstance(original, sqlite3.OperationalError) and "locked" in str(original)


# A pooled asyncpg connection whose server side went away mid-use.
_ASYNCPG_CONNECTION_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
    ConnectionResetError,
    BrokenPipeError,
)


P = ParamSpec("P")
R = TypeVar("R")

_retry_after_a_transient_failure = tenacity.retry(
    retry=tenacity.retry_if_exception(_is_transient),
    stop=tenacity.stop_after_attempt(_ATTEMPTS - 1),
    wait=tenacity.wait_random_exponential(multiplier=0.02, max=0.5),
    reraise=True,
)


def retry_on_conflict(unit_of_work: Callable[P, R]) -> Callable[P, R]:
    """Run ``unit_of_work``; after a transient failure, retry it (up to _ATTEMPTS in all).

    Every unit of work here has committed or changed nothing when it raises, so running
    it again is safe; a step whose commit landed just before the connection broke is
    answered on the next attempt as the replay it now is. The first attempt runs bare and
    only a transient failure hands the rest to tenacity: its per-call bookkeeping measured
    about 20 µs, which every request would pay for a conflict that almost never happens.
    The first retry follows at once (the conflicting writer has finished by the time the
    error arrives); later ones back off with jitter.
    """
    retried: Any = _retry_after_a_transient_failure(unit_of_work)
    if inspect.iscoroutinefunction(unit_of_work):

        @functools.wraps(unit_of_work)
        async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return await unit_of_work(*args, **kwargs)
            except Exception as error:
                if not _is_transient(error):
                    raise
            return await retried(*args, **kwargs)

        return run_async  # type: ignore[return-value]

    @functools.wraps(unit_of_work)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return unit_of_work(*args, **kwargs)
        except Exception as error:
            if not _is_transient(error):
                raise
        return retried(*args, **kwargs)  # type: ignore[no-any-return]

    return run


# -- statements built once ------------------------------------------------------

_runs = runs_table.c
_steps = steps_table.c
_events = events_table.c

_RUN_COLUMNS = (
    _runs.run_id,
    _runs.status,
    _runs.step,
    _runs.lr,
    _runs.momentum,
    _runs.scheduler,
    _runs.param_groups,
    _runs.state,
    _runs.metadata,
    _runs.created_at,
    _runs.updated_at,
)

_SELECT_RUN = sa.select(*_RUN_COLUMNS).where(_runs.run_id == sa.bindparam("run_id"))

_SELECT_CURRENT_ROW = sa.select(
    _steps.id,
    _steps.step,
    _steps.lr,
    _steps.momentum,
    _steps.state,
    _steps.events,
    _steps.stop,
).where(
    _steps.run_pk == sa.bindparam("run_pk"),
    _steps.step == sa.bindparam("step"),
    sa.not_(_steps.superseded),
)

_INSERT_STEP = sa.insert(steps_table)


# -- the hot path's SQL -------------------------------------------------------------
#
# Reporting a step and reading the lr run as driver SQL on the DBAPI cursor of the
# connection SQLAlchemy checked out (:func:`_driver_cursor`), inside the same engines,
# pools and transactions as everything else: nothing to compile, cache-key, bind-process
# or wrap in a Result per call, and each JSON value is serialized once by us (the run's
# new state goes into both the step row and the run row). The values are stored
# exactly as SQLAlchemy's JSON and timestamp types store them, so every other reader
# decodes them as usual. Written with ``:name`` parameters (sqlite3's style) and
# rewritten to psycopg's ``%(name)s`` for PostgreSQL.

# One statement, so one snapshot: the run's key and its recorded row for ``step`` on the
# current line, if there is one (NULL columns when the run has not reached ``step``).
_SQL_RECORDED_STEP = """
SELECT runs.id, steps.step, steps.lr, steps.momentum, steps.events, steps.stop
FROM runs LEFT OUTER JOIN steps
  ON steps.run_pk = runs.id AND steps.step = :step AND NOT steps.superseded
WHERE runs.run_id = :run_id"""

_SQL_CURRENT_LR = "SELECT step, lr, momentum FROM runs WHERE run_id = :run_id"

_SQL_LOCK_RUN = "SELECT id, step, scheduler, param_groups, state FROM runs WHERE run_id = :run_id"

_SQL_CURRENT_ROW = """
SELECT step, lr, momentum, events, stop FROM steps
WHERE run_pk = :run_pk AND step = :step AND NOT superseded"""

_SQL_INSERT_STEP = """
INSERT INTO steps
  (run_pk, step, lr, momentum, state, metrics, worker, events, stop, superseded, recorded_at)
VALUES
  (:run_pk, :step, :lr, :momentum, :state, :metrics, :worker, :events, :stop, false, :now)"""

_SQL_INSERT_EVENT = """
INSERT INTO events (run_pk, step, kind, detail, recorded_at)
VALUES (:run_pk, :step, :kind, :detail, :now)"""

_SQL_UPDATE_RUN = """
UPDATE runs SET step = :step, lr = :lr, momentum = :momentum, state = :state, updated_at = :now
WHERE id = :run_pk"""

# PostgreSQL: the step's INSERT as a data-modifying CTE of the run's UPDATE, so one new
# step is one round trip; both happen whether or not the UPDATE reads the CTE.
_SQL_RECORD_ONE_STEP = f"WITH recorded_step AS ({_SQL_INSERT_STEP}) {_SQL_UPDATE_RUN}"


def _pyformat(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s``."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


def _sqlite_timestamp(moment: datetime) -> str:
    """SQLAlchemy's storage format for DateTime on SQLite; ``moment`` is UTC (see :func:`_now`)."""
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _same(value: Any) -> Any:
    return value


def _sqlite_boolean(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _json_from_text(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class _DriverSql:
    """The hot path's statements and value conversions for one backend's driver."""

    recorded_step: str
    current_lr: str
    lock_run: str
    current_row: str
    insert_step: str
    update_run: str
    insert_event: str
    record_one_step: str | None  # one statement for insert + update, where the backend can
    timestamp: Callable[[datetime], Any]
    json_value: Callable[[Any], Any]  # a JSON column as the driver returns it -> Python
    boolean: Callable[[Any], bool | None]


_DRIVER_SQL: dict[str, _DriverSql] = {
    "sqlite": _DriverSql(
        recorded_step=_SQL_RECORDED_STEP,
        current_lr=_SQL_CURRENT_LR,
        lock_run=_SQL_LOCK_RUN,  # BEGIN IMMEDIATE already holds the database's write lock
        current_row=_SQL_CURRENT_ROW,
        insert_step=_SQL_INSERT_STEP,
        update_run=_SQL_UPDATE_RUN,
        insert_event=_SQL_INSERT_EVENT,
        record_one_step=None,
        timestamp=_sqlite_timestamp,
        json_value=_json_from_text,  # JSON columns are TEXT
        boolean=_sqlite_boolean,
    ),
    "postgresql": _DriverSql(
        recorded_step=_pyformat(_SQL_RECORDED_STEP),
        current_lr=_pyformat(_SQL_CURRENT_LR),
        lock_run=_pyformat(_SQL_LOCK_RUN + " FOR UPDATE"),
        current_row=_pyformat(_SQL_CURRENT_ROW),
        insert_step=_pyformat(_SQL_INSERT_STEP),
        update_run=_pyformat(_SQL_UPDATE_RUN),
        insert_event=_pyformat(_SQL_INSERT_EVENT),
        record_one_step=_pyformat(_SQL_RECORD_ONE_STEP),
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


_ASYNCPG_SQL = _AsyncpgSql(
    recorded_step=_Numbered.of(_SQL_RECORDED_STEP),
    current_lr=_Numbered.of(_SQL_CURRENT_LR),
    lock_run=_Numbered.of(_SQL_LOCK_RUN + " FOR UPDATE"),
    current_row=_Numbered.of(_SQL_CURRENT_ROW),
    insert_step=_Numbered.of(_SQL_INSERT_STEP),
    update_run=_Numbered.of(_SQL_UPDATE_RUN),
    insert_event=_Numbered.of(_SQL_INSERT_EVENT),
    record_one_step=_Numbered.of(_SQL_RECORD_ONE_STEP),
    timestamp=_same,
    json_value=_json_from_text,
    boolean=_same,
)


def _driver_cursor(
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


def _driver_row(
    connection: Connection, statement: str, parameters: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """The first row ``statement`` returns (a plain tuple), or None."""
    cursor = _driver_cursor(connection, statement, parameters)
    try:
        row: tuple[Any, ...] | None = cursor.fetchone()
    except connection.dialect.loaded_dbapi.Error as error:
        connection._handle_dbapi_exception(error, statement, parameters, cursor, None)
    return row


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


# -- answers ---------------------------------------------------------------------


def _run_answer(row: Row[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """A Run as API.md spells it; ``momentum`` only when the schedule cycles it."""
    values = row._mapping if isinstance(row, Row) else row
    answer: dict[str, Any] = {
        "run_id": values["run_id"],
        "status": values["status"],
        "step": values["step"],
        "lr": values["lr"],
    }
    if values["momentum"] is not None:
        answer["momentum"] = values["momentum"]
    answer.update(
        scheduler=values["scheduler"],
        param_groups=values["param_groups"],
        state=values["state"],
        metadata=values["metadata"],
        created_at=_timestamp(values["created_at"]),
        updated_at=_timestamp(values["updated_at"]),
    )
    return answer


def _step_answer(
    step: int,
    lr: Any,
    momentum: Any,
    replayed: bool,
    events: list[dict[str, Any]],
    stop: bool | None,
) -> dict[str, Any]:
    answer: dict[str, Any] = {"step": step, "lr": lr}
    if momentum is not None:
        answer["momentum"] = momentum
    answer["replayed"] = replayed
    answer["events"] = events
    if stop is not None:
        answer["stop"] = stop
    return answer


def _event_dicts(events: Sequence[ScheduleEvent]) -> list[dict[str, Any]]:
    return [{"kind": event.kind, "detail": encode_floats(event.detail)} for event in events]


# -- engine errors as problems ------------------------------------------------------


def _invalid(loc: Sequence[str | int], message: str) -> InvalidRequest:
    where = ".".join(str(part) for part in loc)
    return InvalidRequest(f"{where}: {message}", errors=[{"loc": list(loc), "msg": message}])


def _invalid_config(error: schedules.InvalidConfig) -> InvalidRequest:
    return _invalid(["body", *error.loc], error.message)


def _build(
    config: Mapping[str, Any], param_groups: list[dict[str, Any]]
) -> tuple[dict[str, Any], Scheduler]:
    """Validate and construct: the normalized config and the scheduler at step 0."""
    try:
        normalized = schedules.normalize_config(dict(config))
        scheduler = schedules.build(normalized, param_groups)
    except schedules.InvalidConfig as error:
        raise _invalid_config(error) from None
    return normalized, scheduler


def _check_param_group_count(param_groups: Sequence[object], max_param_groups: int) -> None:
    if len(param_groups) > max_param_groups:
        raise _invalid(
            ["body", "param_groups"],
            f"at most {max_param_groups} param groups are allowed, got {len(param_groups)}",
        )


# -- creating and reading runs ----------------------------------------------------------


def _dialect_insert(database: Database, table: sa.Table) -> Any:
    if database.dialect == "postgresql":
        return postgresql_dialect.insert(table)
    return sqlite_dialect.insert(table)


@retry_on_conflict
def create_run(
    database: Database, run_id: str, request: RunCreate, *, max_param_groups: int
) -> tuple[bool, dict[str, Any]]:
    """PUT a run: (True, run) when created, (False, run) when it exists with the same config.

    Insert-on-conflict first, so two creators racing never both insert; the loser
    locks the winner's row and compares normalized configs (RunConflict if they differ).
    """
    _check_param_group_count(request.param_groups, max_param_groups)
    normalized, scheduler = _build(request.scheduler.as_config(), request.param_groups)
    outcome = scheduler.outcome()
    stored_scheduler = normalized
    stored_groups = encode_floats(request.param_groups)
    lr = encode_floats(outcome.lr)
    momentum = encode_floats(outcome.momentum)
    state = scheduler.state()
    events = _event_dicts(outcome.events)
    now = _now()
    new_run = {
        "run_id": run_id,
        "status": "running",
        "step": outcome.step,
        "lr": lr,
        "momentum": momentum,
        "scheduler": stored_scheduler,
        "param_groups": stored_groups,
        "state": state,
        "metadata": encode_floats(request.metadata),
        "created_at": now,
        "updated_at": now,
    }
    insert_run = (
        _dialect_insert(database, runs_table)
        .values(new_run)
        .on_conflict_do_nothing(index_elements=[_runs.run_id])
        .returning(_runs.id)
    )
    with database.write_lock, database.engine.begin() as connection:
        run_pk = connection.execute(insert_run).scalar()
        if run_pk is not None:
            connection.execute(
                _INSERT_STEP,
                {
                    "run_pk": run_pk,
                    "step": outcome.step,
                    "lr": lr,
                    "momentum": momentum,
                    "state": state,
                    "metrics": {},
                    "worker": None,
                    "events": events,
                    "stop": outcome.stop,
                    "superseded": False,
                    "recorded_at": now,
                },
            )
            step_events = [(outcome.step, event) for event in events]
            _insert_events(connection, _DRIVER_SQL[database.dialect], run_pk, step_events, now)
            return True, _run_answer(new_run)
        existing = connection.execute(_SELECT_RUN.with_for_update(), {"run_id": run_id}).one()
        differences = [
            *config_differences("scheduler", existing.scheduler, stored_scheduler),
            *config_differences("param_groups", existing.param_groups, stored_groups),
        ]
        if differences:
            fields = ", ".join(difference["field"] for difference in differences)
            raise RunConflict(
                f"run {run_id!r} exists with another configuration ({fields})",
                differences=differences,
            )
        return False, _run_answer(existing)


def _same_value(stored: Any, requested: Any) -> bool:
    """JSON sameness: 0 and 0.0 are the same number, but True is not 1."""
    if isinstance(stored, bool) or isinstance(requested, bool):
        return type(stored) is type(requested) and stored == requested
    if isinstance(stored, int | float) and isinstance(requested, int | float):
        return stored == requested
    return type(stored) is type(requested) and stored == requested


def config_differences(path: str, stored: Any, requested: Any) -> list[dict[str, Any]]:
    """Every leaf where two JSON values differ, as ``{"field": "a.b.0.c", "stored", "requested"}``.

    Lists of different lengths are reported whole; a key present on one side only is
    reported with ``null`` on the other.
    """
    if isinstance(stored, dict) and isinstance(requested, dict):
        found: list[dict[str, Any]] = []
        for key in [*stored, *(key for key in requested if key not in stored)]:
            found.extend(config_differences(f"{path}.{key}", stored.get(key), requested.get(key)))
        return found
    if isinstance(stored, list) and isinstance(requested, list) and len(stored) == len(requested):
        found = []
        for index, (stored_item, requested_item) in enumerate(zip(stored, requested, strict=True)):
            found.extend(config_differences(f"{path}.{index}", stored_item, requested_item))
        return found
    if isinstance(stored, dict | list) or isinstance(requested, dict | list):
        if stored == requested:
            return []
        return [{"field": path, "stored": stored, "requested": requested}]
    if _same_value(stored, requested):
        return []
    return [{"field": path, "stored": stored, "requested": requested}]


@retry_on_conflict
def get_run(database: Database, run_id: str) -> dict[str, Any]:
    with database.read_engine.connect() as connection:
        row = connection.execute(_SELECT_RUN, {"run_id": run_id}).first()
    if row is None:
        raise _run_not_found(run_id)
    return _run_answer(row)


def _run_not_found(run_id: str) -> NotFound:
    return NotFound(f"no run {run_id!r}")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


# Cursors hold primary keys and steps: 64-bit at most, or the database would refuse them.
MAX_KEY = 2**63


def _encode_cursor(*keys: int) -> str:
    text = ":".join(str(key) for key in keys)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, parts: int) -> tuple[int, ...]:
    """The keys in an opaque cursor; anything not made by :func:`_encode_cursor` is a 422."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        keys = tuple(int(part) for part in text.split(":"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        keys = ()
    if len(keys) != parts or not all(0 <= key < MAX_KEY for key in keys):
        raise _invalid(["query", "cursor"], "not a cursor this service handed out")
    return keys


DEFAULT_LIST_LIMIT = 100
DEFAULT_HISTORY_LIMIT = 1000


def _page_limit(limit: int | None, default: int, maximum: int) -> int:
    """The page size asked for, or the default; out of range is a 422, never clamped."""
    if limit is None:
        return min(default, maximum)
    if not 1 <= limit <= maximum:
        raise _invalid(["query", "limit"], f"must be between 1 and {maximum}, got {limit}")
    return limit


@retry_on_conflict
def list_runs(
    database: Database,
    *,
    status: str | None,
    prefix: str | None,
    limit: int | None,
    cursor: str | None,
    max_limit: int,
) -> Page:
    """Runs in creation order, keyset-paged on the primary key (the cursor hides it)."""
    limit = _page_limit(limit, DEFAULT_LIST_LIMIT, max_limit)
    query = sa.select(_runs.id, *_RUN_COLUMNS).order_by(_runs.id).limit(limit + 1)
    if status is not None:
        query = query.where(_runs.status == status)
    if prefix:
        # substr rather than LIKE: SQLite's LIKE ignores case, run ids do not.
        query = query.where(sa.func.substr(_runs.run_id, 1, len(prefix)) == prefix)
    if cursor is not None:
        (after_pk,) = _decode_cursor(cursor, 1)
        query = query.where(_runs.id > after_pk)
    with database.read_engine.connect() as connection:
        rows = connection.execute(query).all()
    next_cursor = _encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return Page([_run_answer(row) for row in rows[:limit]], next_cursor)


@retry_on_conflict
def update_run(database: Database, run_id: str, patch: RunPatch) -> dict[str, Any]:
    """PATCH: status and/or metadata (replaced whole); the schedule itself never changes here."""
    values: dict[str, Any] = {}
    if patch.status is not None:
        values["status"] = patch.status
    if patch.metadata is not None:
        values["metadata"] = encode_floats(patch.metadata)
    with database.write_lock, database.engine.begin() as connection:
        run_pk = connection.execute(
            sa.select(_runs.id).where(_runs.run_id == run_id).with_for_update()
        ).scalar()
        if run_pk is None:
            raise _run_not_found(run_id)
        if not values:
            return _run_answer(connection.execute(_SELECT_RUN, {"run_id": run_id}).one())
        updated = connection.execute(
            sa.update(runs_table)
            .where(_runs.id == run_pk)
            .values(**values, updated_at=_now())
            .returning(*_RUN_COLUMNS)
        ).one()
        return _run_answer(updated)


# -- the hot path ----------------------------------------------------------------------


class RecordedSteps:
    """The highest step this process has seen recorded, per run: a hint, never an answer.

    It only decides which path a report tries first. A step at or below the hint is
    most likely a replay (another rank's report of a step already answered), so it
    tries the lock-free read; a step above it is most likely new, so it goes straight
    to the write path and saves the read and its pool checkout. A stale hint (another
    replica advanced the run, a rewind moved it back) costs one extra statement, never
    a wrong answer: the write path looks again under the lock, and a read that finds
    nothing falls through to it. Bounded: past ``capacity`` runs it starts over.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._steps: dict[str, int] = {}

    def probably_recorded(self, run_id: str, step: int) -> bool:
        return step <= self._steps.get(run_id, -1)

    def saw(self, run_id: str, step: int) -> None:
        if step > self._steps.get(run_id, -1):
            if len(self._steps) >= self.capacity:
                self._steps.clear()
            self._steps[run_id] = step


async def report_step(
    database: Database,
    run_id: str,
    report: StepReport,
    *,
    max_catch_up_steps: int,
    recorded_steps: RecordedSteps,
) -> dict[str, Any]:
    """A worker's step report: replay what is recorded, else advance (or catch up) and record.

    A recorded step is answered from one autocommit read, without taking any lock,
    so the ranks replaying a step never queue behind a writer. A step the run has not
    reached takes the write path, which locks the run and looks again (another rank
    may have recorded it in between). ``recorded_steps`` says which to try first.
    PostgreSQL runs it on the event loop (asyncpg); SQLite in a worker thread.
    """
    if database.hot_path_pool is not None:
        return await _report_step_on_asyncpg(
            database.hot_path_pool, run_id, report, max_catch_up_steps, recorded_steps
        )
    if database.loop_reader is not None and recorded_steps.probably_recorded(run_id, report.step):
        recorded = _read_on_the_loop(
            database.loop_reader, _SQL_RECORDED_STEP, {"run_id": run_id, "step": report.step}
        )
        if recorded is not None and recorded[2] is not None:
            sql = _DRIVER_SQL["sqlite"]
            return _replay_answer(sql.json_value, sql.boolean, recorded[1:])
    return await to_thread.run_sync(
        functools.partial(
            _report_step_in_thread,
            database,
            run_id,
            report,
            max_catch_up_steps=max_catch_up_steps,
            recorded_steps=recorded_steps,
        )
    )


@retry_on_conflict
def _report_step_in_thread(
    database: Database,
    run_id: str,
    report: StepReport,
    *,
    max_catch_up_steps: int,
    recorded_steps: RecordedSteps,
) -> dict[str, Any]:
    """:func:`report_step` on SQLAlchemy's engines, for a thread that may block."""
    sql = _DRIVER_SQL[database.dialect]
    if recorded_steps.probably_recorded(run_id, report.step):
        with database.read_engine.connect() as connection:
            recorded = _driver_row(
                connection, sql.recorded_step, {"run_id": run_id, "step": report.step}
            )
        if recorded is None:
            raise _run_not_found(run_id)
        if recorded[2] is not None:
            return _replay_answer(sql.json_value, sql.boolean, recorded[1:])
    with database.write_lock, database.engine.begin() as connection:
        locked = _driver_row(connection, sql.lock_run, {"run_id": run_id})
        if locked is None:
            raise _run_not_found(run_id)
        run_pk, run_step = locked[0], locked[1]
        if report.step <= run_step:
            recorded = _driver_row(
                connection, sql.current_row, {"run_pk": run_pk, "step": report.step}
            )
            assert recorded is not None  # every step up to the run's is on its current line
            return _replay_answer(sql.json_value, sql.boolean, recorded)
        advance = _advance(sql.json_value, sql.timestamp, locked, report, max_catch_up_steps)
        if len(advance.step_rows) == 1 and sql.record_one_step is not None:
            _driver_cursor(connection, sql.record_one_step, advance.step_rows[0])
        else:
            _driver_cursor(connection, sql.insert_step, advance.step_rows)
            _driver_cursor(connection, sql.update_run, advance.step_rows[-1])
        if advance.event_rows:
            _driver_cursor(connection, sql.insert_event, advance.event_rows)
    recorded_steps.saw(run_id, report.step)
    return advance.answer


@retry_on_conflict
async def _report_step_on_asyncpg(
    pool: asyncpg.Pool,
    run_id: str,
    report: StepReport,
    max_catch_up_steps: int,
    recorded_steps: RecordedSteps,
) -> dict[str, Any]:
    """:func:`report_step` on PostgreSQL: the same statements, awaited on one pooled connection."""
    sql = _ASYNCPG_SQL
    async with _pooled(pool) as connection:
        if recorded_steps.probably_recorded(run_id, report.step):
            statement = sql.recorded_step
            recorded = await connection.fetchrow(
                statement.sql, *statement.args({"run_id": run_id, "step": report.step})
            )
            if recorded is None:
                raise _run_not_found(run_id)
            if recorded[2] is not None:
                return _replay_answer(sql.json_value, sql.boolean, tuple(recorded)[1:])
        async with connection.transaction():
            locked = await connection.fetchrow(sql.lock_run.sql, run_id)
            if locked is None:
                raise _run_not_found(run_id)
            run_pk, run_step = locked[0], locked[1]
            if report.step <= run_step:
                recorded = await connection.fetchrow(sql.current_row.sql, run_pk, report.step)
                assert recorded is not None  # every step up to the run's is on its current line
                return _replay_answer(sql.json_value, sql.boolean, tuple(recorded))
            advance = _advance(
                sql.json_value, sql.timestamp, tuple(locked), report, max_catch_up_steps
            )
            if len(advance.step_rows) == 1:
                statement = sql.record_one_step
                await connection.execute(statement.sql, *statement.args(advance.step_rows[0]))
            else:
                await connection.executemany(
                    sql.insert_step.sql, [sql.insert_step.args(row) for row in advance.step_rows]
                )
                statement = sql.update_run
                await connection.execute(statement.sql, *statement.args(advance.step_rows[-1]))
            if advance.event_rows:
                await connection.executemany(
                    sql.insert_event.sql,
                    [sql.insert_event.args(row) for row in advance.event_rows],
                )
    recorded_steps.saw(run_id, report.step)
    return advance.answer


@contextlib.asynccontextmanager
async def _pooled(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection; after a lost one, the pool's others are replaced too.

    A server restart or failover ends every session at once; expiring the pool's
    connections spares the retry (:func:`retry_on_conflict`) from meeting them one by one.
    """
    try:
        async with pool.acquire() as connection:
            yield connection
    except _ASYNCPG_CONNECTION_LOST:
        await pool.expire_connections()
        raise


def _replay_answer(
    json_value: Callable[[Any], Any], boolean: Callable[[Any], bool | None], recorded: Sequence[Any]
) -> dict[str, Any]:
    """What the recorded step answered when it was new, with ``replayed: true``.

    ``recorded`` is a step row's (step, lr, momentum, events, stop) as the driver returns it.
    """
    step, lr, momentum, events, stop = recorded
    return _step_answer(
        step, json_value(lr), json_value(momentum), True, json_value(events), boolean(stop)
    )


@dataclass(frozen=True)
class _Advance:
    """What advancing a run writes (driver parameters by name) and what it answers."""

    step_rows: list[dict[str, Any]]  # the new Step rows; the last one's values go on the run
    event_rows: list[dict[str, Any]]
    answer: dict[str, Any]


def _advance(
    json_value: Callable[[Any], Any],
    timestamp: Callable[[datetime], Any],
    locked: Sequence[Any],
    report: StepReport,
    max_catch_up_steps: int,
) -> _Advance:
    """Step the engine from the locked run (id, step, scheduler, param_groups, state) to
    ``report.step``, which is past the run's step; no I/O, so both drivers share it."""
    run_pk, run_step, stored_scheduler, stored_groups, stored_state = locked
    target = report.step
    gap = target - run_step
    if gap > max_catch_up_steps:
        raise _invalid(
            ["body", "step"],
            f"step {target} is {gap} steps ahead of the run (at step {run_step}); "
            f"at most {max_catch_up_steps} steps are caught up in one report",
        )
    # The engine refuses non-finite config values, so a stored config needs no decoding.
    scheduler = schedules.restore(
        json_value(stored_scheduler), json_value(stored_groups), json_value(stored_state)
    )
    if gap > 1 and scheduler.uses_metric:
        raise StepOutOfOrder(
            f"this schedule reads a metric at every step, so the next report must be "
            f"step {run_step + 1}, not {target}",
            expected_step=run_step + 1,
        )
    recorded_at = timestamp(_now())
    step_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    answer_events: list[dict[str, Any]] = []
    for step in range(run_step + 1, target + 1):
        is_last = step == target
        outcome = _step_engine(scheduler, report.metrics if is_last else None)
        events = _event_dicts(outcome.events)
        answer_events.extend(events)
        event_rows.extend(_event_row(run_pk, step, event, recorded_at) for event in events)
        lr = encode_floats(outcome.lr)
        momentum = encode_floats(outcome.momentum)
        step_rows.append(
            {
                "run_pk": run_pk,
                "step": step,
                "lr": _json_text(lr),
                "momentum": _json_text(momentum),
                "state": _json_text(scheduler.state()),
                "metrics": _json_text(encode_floats(report.metrics)) if is_last else "{}",
                "worker": report.worker,
                # A replay of the reported step answers what this report answered.
                "events": _json_text(answer_events if is_last else events),
                "stop": outcome.stop,
                "now": recorded_at,
            }
        )
    answer = _step_answer(target, lr, momentum, False, answer_events, outcome.stop)
    return _Advance(step_rows, event_rows, answer)


def _step_engine(scheduler: Scheduler, metrics: Mapping[str, float] | None) -> StepOutcome:
    """One engine step, its refusals turned into the problems API.md names."""
    try:
        return scheduler.step(metrics)
    except schedules.MissingMetric as error:
        raise _invalid(["body", "metrics", error.name], str(error)) from None
    except schedules.StepPastEnd as error:
        raise ScheduleEnded(str(error), step=error.step, total_steps=error.total_steps) from None
    except schedules.InvalidStepValue as error:
        raise _invalid(["body", "step"], f"step {error.step}: {error}") from None


def _event_row(
    run_pk: int, step: int, event: Mapping[str, Any], recorded_at: Any
) -> dict[str, Any]:
    return {
        "run_pk": run_pk,
        "step": step,
        "kind": event["kind"],
        "detail": _json_text(event["detail"]),
        "now": recorded_at,
    }


def _insert_events(
    connection: Connection,
    sql: _DriverSql,
    run_pk: int,
    events: Sequence[tuple[int, dict[str, Any]]],
    now: datetime,
) -> None:
    """Record events outside the hot path (creating a run, lr edits, rewinds)."""
    recorded_at = sql.timestamp(now)
    rows = [_event_row(run_pk, step, event, recorded_at) for step, event in events]
    if rows:
        _driver_cursor(connection, sql.insert_event, rows)


async def current_lr(database: Database, run_id: str, step: int | None) -> dict[str, Any]:
    """GET /lr: the run's current values (a POST /lr shows here at once), or step K's row.

    PostgreSQL reads on the event loop (asyncpg); SQLite in a worker thread.
    """
    if database.hot_path_pool is not None:
        return await _current_lr_on_asyncpg(database.hot_path_pool, run_id, step)
    if database.loop_reader is not None:
        if step is None:
            row = _read_on_the_loop(database.loop_reader, _SQL_CURRENT_LR, {"run_id": run_id})
        else:
            recorded = _read_on_the_loop(
                database.loop_reader, _SQL_RECORDED_STEP, {"run_id": run_id, "step": step}
            )
            row = None if recorded is None or recorded[2] is None else recorded[1:4]
        if row is not None:
            return _lr_answer(_json_from_text, run_id, step, row)
    return await to_thread.run_sync(current_lr_blocking, database, run_id, step)


def _read_on_the_loop(
    reader: LoopReader, statement: str, parameters: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """One row read on the event loop (see service.db.LoopReader); None when the row is
    missing or the database is busy, and the caller then asks the thread-pool path,
    which also turns a missing run into its 404."""
    try:
        row: tuple[Any, ...] | None = reader.connection().execute(statement, parameters).fetchone()
    except sqlite3.OperationalError:
        return None
    return row


@retry_on_conflict
def current_lr_blocking(database: Database, run_id: str, step: int | None) -> dict[str, Any]:
    """:func:`current_lr` on SQLAlchemy's read engine, for a thread that may block."""
    sql = _DRIVER_SQL[database.dialect]
    with database.read_engine.connect() as connection:
        if step is None:
            row = _driver_row(connection, sql.current_lr, {"run_id": run_id})
        else:
            recorded = _driver_row(connection, sql.recorded_step, {"run_id": run_id, "step": step})
            row = None if recorded is None else recorded[1:4]
    return _lr_answer(sql.json_value, run_id, step, row)


@retry_on_conflict
async def _current_lr_on_asyncpg(
    pool: asyncpg.Pool, run_id: str, step: int | None
) -> dict[str, Any]:
    sql = _ASYNCPG_SQL
    async with _pooled(pool) as connection:
        if step is None:
            found = await connection.fetchrow(sql.current_lr.sql, run_id)
            row = None if found is None else tuple(found)
        else:
            statement = sql.recorded_step
            found = await connection.fetchrow(
                statement.sql, *statement.args({"run_id": run_id, "step": step})
            )
            row = None if found is None else tuple(found)[1:4]
    return _lr_answer(sql.json_value, run_id, step, row)


def _lr_answer(
    json_value: Callable[[Any], Any], run_id: str, step: int | None, row: Sequence[Any] | None
) -> dict[str, Any]:
    """GET /lr's answer from (step, lr, momentum) as the driver returned them."""
    if row is None:
        raise _run_not_found(run_id)
    row_step, lr, momentum = row
    if lr is None:
        raise NotFound(f"step {step} is not on run {run_id!r}'s current line of history")
    answer: dict[str, Any] = {"step": row_step, "lr": json_value(lr)}
    momentum = json_value(momentum)
    if momentum is not None:
        answer["momentum"] = momentum
    return answer


# -- changing a running run ---------------------------------------------------------------


@retry_on_conflict
def set_lr(database: Database, run_id: str, change: LrChange) -> dict[str, Any]:
    """POST /lr: a hand edit of the groups' lrs; the next step continues from it, as in torch."""
    with database.write_lock, database.engine.begin() as connection:
        run = connection.execute(
            sa.select(
                _runs.id, _runs.step, _runs.lr, _runs.scheduler, _runs.param_groups, _runs.state
            )
            .where(_runs.run_id == run_id)
            .with_for_update()
        ).first()
        if run is None:
            raise _run_not_found(run_id)
        if len(change.lr) != len(run.lr):
            raise _invalid(
                ["body", "lr"],
                f"the run has {len(run.lr)} param groups, so lr needs {len(run.lr)} values, "
                f"got {len(change.lr)}",
            )
        scheduler = schedules.restore(run.scheduler, run.param_groups, run.state)
        scheduler.set_lr(change.lr)
        new_lr = encode_floats(scheduler.lrs())
        now = _now()
        detail: dict[str, Any] = {"from": run.lr, "to": new_lr}
        if change.reason is not None:
            detail["reason"] = change.reason
        lr_set = [(run.step, {"kind": "lr_set", "detail": detail})]
        _insert_events(connection, _DRIVER_SQL[database.dialect], run.id, lr_set, now)
        updated = connection.execute(
            sa.update(runs_table)
            .where(_runs.id == run.id)
            .values(lr=new_lr, state=scheduler.state(), updated_at=now)
            .returning(*_RUN_COLUMNS)
        ).one()
        return _run_answer(updated)


@retry_on_conflict
def rewind(database: Database, run_id: str, step: int) -> dict[str, Any]:
    """POST /rewind: back to the state step K recorded; later rows are superseded, never deleted."""
    with database.write_lock, database.engine.begin() as connection:
        run = connection.execute(
            sa.select(_runs.id, _runs.step).where(_runs.run_id == run_id).with_for_update()
        ).first()
        if run is None:
            raise _run_not_found(run_id)
        if step > run.step:
            raise _invalid(
                ["body", "step"],
                f"step {step} is not on the run's current line of history (steps 0 to {run.step})",
            )
        recorded = connection.execute(_SELECT_CURRENT_ROW, {"run_pk": run.id, "step": step}).one()
        now = _now()
        connection.execute(
            sa.update(steps_table)
            .where(_steps.run_pk == run.id, _steps.step > step, sa.not_(_steps.superseded))
            .values(superseded=True)
        )
        detail = {"from": run.step, "to": step}
        rewound = [(step, {"kind": "rewind", "detail": detail})]
        _insert_events(connection, _DRIVER_SQL[database.dialect], run.id, rewound, now)
        updated = connection.execute(
            sa.update(runs_table)
            .where(_runs.id == run.id)
            .values(
                step=step,
                state=recorded.state,
                lr=recorded.lr,
                momentum=recorded.momentum,
                updated_at=now,
            )
            .returning(*_RUN_COLUMNS)
        ).one()
        return _run_answer(updated)


# -- history ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPage(Page):
    """A page of history, plus what a CSV rendering needs to lay out its columns."""

    group_count: int
    cycles_momentum: bool


@dataclass(frozen=True)
class HistoryQuery:
    start: int | None
    end: int | None
    limit: int | None
    cursor: str | None
    every: int
    include_superseded: bool


def _run_summary(connection: Connection, run_id: str) -> Row[Any]:
    """The run's key and what reading its history needs to know about it; 404 if missing."""
    run = connection.execute(
        sa.select(_runs.id, _runs.lr, _runs.momentum, _runs.scheduler, _runs.step).where(
            _runs.run_id == run_id
        )
    ).first()
    if run is None:
        raise _run_not_found(run_id)
    return run


@retry_on_conflict
def history(database: Database, run_id: str, query: HistoryQuery, *, max_limit: int) -> HistoryPage:
    """The run's steps in order, keyset-paged on (step, id) — never OFFSET."""
    limit = _page_limit(query.limit, DEFAULT_HISTORY_LIMIT, max_limit)
    if query.start is not None and query.end is not None and query.end < query.start:
        raise _invalid(["query", "end"], f"end ({query.end}) is before start ({query.start})")
    statement = (
        sa.select(
            _steps.id,
            _steps.step,
            _steps.lr,
            _steps.momentum,
            _steps.metrics,
            _steps.worker,
            _steps.recorded_at,
            _steps.superseded,
        )
        .order_by(_steps.step, _steps.id)
        .limit(limit + 1)
    )
    if query.start is not None:
        statement = statement.where(_steps.step >= query.start)
    if query.end is not None:
        statement = statement.where(_steps.step <= query.end)
    if query.every > 1:
        statement = statement.where(_steps.step % query.every == 0)
    if not query.include_superseded:
        statement = statement.where(sa.not_(_steps.superseded))
    if query.cursor is not None:
        after_step, after_pk = _decode_cursor(query.cursor, 2)
        statement = statement.where(
            sa.tuple_(_steps.step, _steps.id) > sa.tuple_(after_step, after_pk)
        )
    with database.read_engine.connect() as connection:
        run = _run_summary(connection, run_id)
        rows = connection.execute(statement.where(_steps.run_pk == run.id)).all()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = _encode_cursor(last.step, last.id)
    items = []
    for row in rows[:limit]:
        item: dict[str, Any] = {"step": row.step, "lr": row.lr}
        if row.momentum is not None:
            item["momentum"] = row.momentum
        item.update(
            metrics=row.metrics,
            worker=row.worker,
            recorded_at=_timestamp(row.recorded_at),
            superseded=row.superseded,
        )
        items.append(item)
    return HistoryPage(
        items=items,
        next_cursor=next_cursor,
        group_count=len(run.lr),
        cycles_momentum=run.momentum is not None,
    )


@retry_on_conflict
def list_events(
    database: Database, run_id: str, *, limit: int | None, cursor: str | None, max_limit: int
) -> Page:
    """The run's events in the order they happened, keyset-paged on their id."""
    limit = _page_limit(limit, DEFAULT_HISTORY_LIMIT, max_limit)
    statement = (
        sa.select(_events.id, _events.step, _events.kind, _events.detail, _events.recorded_at)
        .order_by(_events.id)
        .limit(limit + 1)
    )
    if cursor is not None:
        (after_pk,) = _decode_cursor(cursor, 1)
        statement = statement.where(_events.id > after_pk)
    with database.read_engine.connect() as connection:
        run = _run_summary(connection, run_id)
        rows = connection.execute(statement.where(_events.run_pk == run.id)).all()
    next_cursor = _encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    items = [
        {
            "step": row.step,
            "kind": row.kind,
            "detail": row.detail,
            "recorded_at": _timestamp(row.recorded_at),
        }
        for row in rows[:limit]
    ]
    return Page(items, next_cursor)


# -- preview, types, range test ----------------------------------------------------------------


def preview(
    request: PreviewRequest, *, max_preview_steps: int, max_param_groups: int
) -> dict[str, Any]:
    """Run a schedule for ``steps`` steps without storing anything."""
    if request.steps > max_preview_steps:
        raise _invalid(["body", "steps"], f"at most {max_preview_steps} steps, got {request.steps}")
    _check_param_group_count(request.param_groups, max_param_groups)
    _, scheduler = _build(request.scheduler.as_config(), request.param_groups)
    metrics = request.metrics or []
    first = scheduler.outcome()
    lrs = [first.lr]
    momenta = [first.momentum]
    for step in range(1, request.steps + 1):
        metric = metrics[step - 1] if step <= len(metrics) else None
        try:
            outcome = scheduler.step(metric)
        except schedules.MissingMetric as error:
            raise _invalid(
                ["body", "metrics"],
                f"step {step} needs a metric ({error.name!r}): give metrics[{step - 1}]",
            ) from None
        except (schedules.StepPastEnd, schedules.InvalidStepValue) as error:
            raise _invalid(["body", "steps"], f"step {step} fails: {error}") from None
        lrs.append(outcome.lr)
        momenta.append(outcome.momentum)
    answer: dict[str, Any] = {"lr": encode_floats(lrs)}
    if first.momentum is not None:
        answer["momentum"] = encode_floats(momenta)
    return answer


def scheduler_types() -> dict[str, Any]:
    return {"items": encode_floats(schedules.scheduler_types())}


@retry_on_conflict
def lr_suggestion(database: Database, run_id: str) -> dict[str, Any]:
    """The range test's suggestion, from the lrs and losses its current line recorded.

    The loss reported with step k was measured at the lr recorded at step k - 1 (the
    worker trained with it, then stepped); the engine smooths them as the steps did.
    """
    with database.read_engine.connect() as connection:
        run = _run_summary(connection, run_id)
        scheduler_type = run.scheduler["type"]
        if scheduler_type != RANGE_TEST_TYPE:
            raise _invalid(
                ["path", "run_id"],
                f"run {run_id!r} is a {scheduler_type} schedule; "
                f"lr suggestions come from {RANGE_TEST_TYPE} runs only",
            )
        rows = connection.execute(
            sa.select(_steps.lr, _steps.metrics)
            .where(_steps.run_pk == run.id, sa.not_(_steps.superseded))
            .order_by(_steps.step)
        ).all()
    monitor = run.scheduler["monitor"]
    measured_lrs = [float(decode_floats(row.lr[0])) for row in rows[:-1]]
    losses = [float(decode_floats(row.metrics[monitor])) for row in rows[1:]]
    curve = range_test.smoothed_curve(measured_lrs, losses)
    try:
        suggestion = range_test.suggest(curve, mode=run.scheduler["params"]["mode"])
    except range_test.NotEnoughData as error:
        raise NotEnoughData(
            str(error), usable_points=error.usable_points, required_points=error.required_points
        ) from None
    return encode_floats(suggestion)
