"""The hot path: step reports and lr reads, the bulk of the traffic.

A replay is one lock-free read; a new step is lock, restore, step, insert and
update, commit. On PostgreSQL it all runs on the event loop over asyncpg; on
SQLite reads run on the event loop (service.db.LoopReader) and writes in a
worker thread, since the driver blocks.
"""

import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from anyio import to_thread

from service import schedules
from service.db import Database, LoopReader
from service.problems import (
    NotFound,
    ScheduleEnded,
    StepOutOfOrder,
)
from service.runs.answers import event_dicts, invalid, run_not_found, step_answer
from service.runs.retrying import ASYNCPG_CONNECTION_LOST, retry_on_conflict
from service.runs.statements import (
    ASYNCPG_SQL,
    DRIVER_SQL,
    SQL_CURRENT_LR,
    SQL_CURRENT_ROW,
    SQL_INSERT_STEP,
    SQL_LOCK_RUN,
    SQL_RECORDED_STEP,
    SQL_UPDATE_RUN,
    driver_cursor,
    driver_row,
    event_row,
    json_from_text,
    json_text,
    utc_now,
)
from service.schedules.base import Scheduler, StepOutcome
from service.schedules.codec import encode_floats
from service.schemas import StepReport


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
        self.step_columns: dict[str, int] = {}

    def probably_recorded(self, run_id: str, step: int) -> bool:
        return step <= self.step_columns.get(run_id, -1)

    def saw(self, run_id: str, step: int) -> None:
        if step > self.step_columns.get(run_id, -1):
            if len(self.step_columns) >= self.capacity:
                self.step_columns.clear()
            self.step_columns[run_id] = step


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
            database.loop_reader, SQL_RECORDED_STEP, {"run_id": run_id, "step": report.step}
        )
        if recorded is not None and recorded[2] is not None:
            sql = DRIVER_SQL["sqlite"]
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
    """:func:`report_step` on SQLite, for a thread that may block.

    ``BEGIN IMMEDIATE`` already holds the database's write lock, so the run's row is
    read without ``FOR UPDATE``.
    """
    assert database.dialect == "sqlite", "PostgreSQL reports steps on database.hot_path_pool"
    sql = DRIVER_SQL["sqlite"]
    if recorded_steps.probably_recorded(run_id, report.step):
        with database.read_engine.connect() as connection:
            recorded = driver_row(
                connection, sql.recorded_step, {"run_id": run_id, "step": report.step}
            )
        if recorded is None:
            raise run_not_found(run_id)
        if recorded[2] is not None:
            return _replay_answer(sql.json_value, sql.boolean, recorded[1:])
    with database.write_lock, database.engine.begin() as connection:
        locked = driver_row(connection, SQL_LOCK_RUN, {"run_id": run_id})
        if locked is None:
            raise run_not_found(run_id)
        run_pk, run_step = locked[0], locked[1]
        if report.step <= run_step:
            recorded = driver_row(
                connection, SQL_CURRENT_ROW, {"run_pk": run_pk, "step": report.step}
            )
            assert recorded is not None  # every step up to the run's is on its current line
            return _replay_answer(sql.json_value, sql.boolean, recorded)
        advance = _advance(sql.json_value, sql.timestamp, locked, report, max_catch_up_steps)
        driver_cursor(connection, SQL_INSERT_STEP, advance.step_rows)
        driver_cursor(connection, SQL_UPDATE_RUN, advance.step_rows[-1])
        if advance.event_rows:
            driver_cursor(connection, sql.insert_event, advance.event_rows)
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
    sql = ASYNCPG_SQL
    async with _pooled(pool) as connection:
        if recorded_steps.probably_recorded(run_id, report.step):
            statement = sql.recorded_step
            recorded = await connection.fetchrow(
                statement.sql, *statement.args({"run_id": run_id, "step": report.step})
            )
            if recorded is None:
                raise run_not_found(run_id)
            if recorded[2] is not None:
                return _replay_answer(sql.json_value, sql.boolean, tuple(recorded)[1:])
        async with connection.transaction():
            locked = await connection.fetchrow(sql.lock_run.sql, run_id)
            if locked is None:
                raise run_not_found(run_id)
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
    except ASYNCPG_CONNECTION_LOST:
        await pool.expire_connections()
        raise


def _replay_answer(
    json_value: Callable[[Any], Any], boolean: Callable[[Any], bool | None], recorded: Sequence[Any]
) -> dict[str, Any]:
    """What the recorded step answered when it was new, with ``replayed: true``.

    ``recorded`` is a step row's (step, lr, momentum, events, stop) as the driver returns it.
    """
    step, lr, momentum, events, stop = recorded
    return step_answer(
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
        raise invalid(
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
    recorded_at = timestamp(utc_now())
    step_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    answer_events: list[dict[str, Any]] = []
    for step in range(run_step + 1, target + 1):
        is_last = step == target
        outcome = _step_engine(scheduler, report.metrics if is_last else None)
        events = event_dicts(outcome.events)
        answer_events.extend(events)
        event_rows.extend(event_row(run_pk, step, event, recorded_at) for event in events)
        lr = encode_floats(outcome.lr)
        momentum = encode_floats(outcome.momentum)
        step_rows.append(
            {
                "run_pk": run_pk,
                "step": step,
                "lr": json_text(lr),
                "momentum": json_text(momentum),
                "state": json_text(scheduler.state()),
                "metrics": json_text(encode_floats(report.metrics)) if is_last else "{}",
                "worker": report.worker,
                # A replay of the reported step answers what this report answered.
                "events": json_text(answer_events if is_last else events),
                "stop": outcome.stop,
                "now": recorded_at,
            }
        )
    answer = step_answer(target, lr, momentum, False, answer_events, outcome.stop)
    return _Advance(step_rows, event_rows, answer)


def _step_engine(scheduler: Scheduler, metrics: Mapping[str, float] | None) -> StepOutcome:
    """One engine step, its refusals turned into the problems API.md names."""
    try:
        return scheduler.step(metrics)
    except schedules.MissingMetric as error:
        raise invalid(["body", "metrics", error.name], str(error)) from None
    except schedules.StepPastEnd as error:
        raise ScheduleEnded(str(error), step=error.step, total_steps=error.total_steps) from None
    except schedules.InvalidStepValue as error:
        raise invalid(["body", "step"], f"step {error.step}: {error}") from None


async def current_lr(database: Database, run_id: str, step: int | None) -> dict[str, Any]:
    """GET /lr: the run's current values (a POST /lr shows here at once), or step K's row.

    PostgreSQL reads on the event loop (asyncpg); SQLite in a worker thread.
    """
    if database.hot_path_pool is not None:
        return await _current_lr_on_asyncpg(database.hot_path_pool, run_id, step)
    if database.loop_reader is not None:
        if step is None:
            row = _read_on_the_loop(database.loop_reader, SQL_CURRENT_LR, {"run_id": run_id})
        else:
            recorded = _read_on_the_loop(
                database.loop_reader, SQL_RECORDED_STEP, {"run_id": run_id, "step": step}
            )
            row = None if recorded is None or recorded[2] is None else recorded[1:4]
        if row is not None:
            return _lr_answer(json_from_text, run_id, step, row)
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
    sql = DRIVER_SQL[database.dialect]
    with database.read_engine.connect() as connection:
        if step is None:
            row = driver_row(connection, sql.current_lr, {"run_id": run_id})
        else:
            recorded = driver_row(connection, sql.recorded_step, {"run_id": run_id, "step": step})
            row = None if recorded is None else recorded[1:4]
    return _lr_answer(sql.json_value, run_id, step, row)


@retry_on_conflict
async def _current_lr_on_asyncpg(
    pool: asyncpg.Pool, run_id: str, step: int | None
) -> dict[str, Any]:
    sql = ASYNCPG_SQL
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
        raise run_not_found(run_id)
    row_step, lr, momentum = row
    if lr is None:
        raise NotFound(f"step {step} is not on run {run_id!r}'s current line of history")
    answer: dict[str, Any] = {"step": row_step, "lr": json_value(lr)}
    momentum = json_value(momentum)
    if momentum is not None:
        answer["momentum"] = momentum
    return answer
