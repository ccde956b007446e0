"""The hot path: step reports and lr reads, the bulk of the traffic.

Each use case is written once. A read is one :class:`HotStatement` fetched by
:func:`_read_row`; a step report's write is the generator :func:`_record_step`
(lock → re-check → advance → write), which yields the statements it needs and is
driven by one of two small runners: :func:`_run_on_sqlite` in a worker thread (the
driver blocks) or :func:`_run_on_asyncpg` on the event loop. The logic never knows
which driver answers it; the runners never know what the logic decides.
"""

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from anyio import to_thread

from service import schedules
from service.db import DATABASE_WAIT_SECONDS, Database
from service.limits import CatchUpLimit
from service.problems import (
    NotFound,
    Problem,
    RunNotRunning,
    ScheduleEnded,
    ScheduleFailed,
    StepOutOfOrder,
)
from service.runs.answers import event_dicts, invalid, run_not_found, step_answer
from service.runs.extremes import (
    INSERT_EXTREMES,
    Point,
    StoreExtremes,
    record_passed_blocks,
)
from service.runs.ranks import (
    RANK_REPORT,
    Decision,
    Pending,
    Ranks,
    as_utc,
    check_rank,
    check_repeated_report,
    collect,
)
from service.runs.retrying import ASYNCPG_CONNECTION_LOST, retry_on_conflict
from service.runs.statements import (
    CURRENT_LR,
    CURRENT_ROW,
    EVENT_RECORDED,
    INSERT_EVENT,
    INSERT_STEP,
    LOCK_RUN,
    RANKED_STEP_STATUS,
    RECORD_ONE_STEP,
    RECORDED_RANK_STEP,
    RECORDED_STEP,
    UPDATE_RUN,
    Execute,
    Fetch,
    FetchRows,
    HotStatement,
    event_row,
    json_from_text,
    json_text,
    sqlite_timestamp,
    utc_now,
)
from service.runs.waiting import (
    FIRST_LOOK_SECONDS,
    LAST_LOOK_SECONDS,
    StepWaiters,
    waiting_for,
)
from service.schedules.base import Scheduler, StepOutcome
from service.schedules.codec import encode_floats
from service.schemas import STOPPED_STATUSES, StepReport

# A row as a driver returns it, read by column name (sqlite3.Row or asyncpg.Record).
Row = Mapping[str, Any]


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
        self.highest_steps: dict[str, int] = {}

    def probably_recorded(self, run_id: str, step: int) -> bool:
        return step <= self.highest_steps.get(run_id, -1)

    def saw(self, run_id: str, step: int) -> None:
        if step > self.highest_steps.get(run_id, -1):
            if len(self.highest_steps) >= self.capacity:
                self.highest_steps.clear()
            self.highest_steps[run_id] = step


# -- what the logic asks of a driver (Fetch, FetchRows, Execute: service.runs.statements) --


@dataclass(frozen=True)
class Record:
    """Insert ``step_rows`` (the last one's values go onto the run) and ``event_rows``."""

    step_rows: Sequence[Mapping[str, Any]]
    event_rows: Sequence[Mapping[str, Any]]


# What a unit of work finally gives: the answer, or a problem to raise once the
# transaction has committed (a schedule failure is recorded as an event, then refused).
Outcome = dict[str, Any] | Problem
Request = Fetch | Record | FetchRows | StoreExtremes | Execute
# A Fetch is answered with a row (or None), a FetchRows with every row, the rest with None.
# (An empty dict outcome: a reader's timeout decision found nothing left to decide.)
Unit = Generator[Request, Any, Outcome]
UnitFactory = Callable[[Callable[[datetime], Any]], Unit]


# -- the use cases ---------------------------------------------------------------


async def report_step(
    database: Database,
    run_id: str,
    report: StepReport,
    *,
    catch_up: CatchUpLimit,
    recorded_steps: RecordedSteps,
    waiters: StepWaiters,
) -> dict[str, Any]:
    """A worker's step report: replay what is recorded, else advance (or catch up) and record.

    A recorded step is answered from one autocommit read, without taking any lock,
    so the ranks replaying a step never queue behind a writer. A step the run has not
    reached takes the write path, which locks the run and looks again (another rank
    may have recorded it in between). ``recorded_steps`` says which to try first.
    On a ranked run (service.runs.ranks) the answer may be pending (202).
    """
    if recorded_steps.probably_recorded(run_id, report.step):
        replayed = await _replayed_answer(database, run_id, report)
        if replayed is not None:
            return replayed
    outcome = await _in_write_transaction(
        database, functools.partial(_record_step, run_id, report, catch_up)
    )
    if isinstance(outcome, Problem):
        raise outcome
    if not outcome.get("pending"):
        recorded_steps.saw(run_id, report.step)
        waiters.decided(run_id, report.step)
    return outcome


async def _replayed_answer(
    database: Database, run_id: str, report: StepReport
) -> dict[str, Any] | None:
    """The recorded answer to a step the run has reached, read without a lock (or None)."""
    if report.rank is None:
        recorded = await _read_row(database, RECORDED_STEP, {"run_id": run_id, "step": report.step})
    else:
        key = {"run_id": run_id, "step": report.step, "rank": report.rank}
        recorded = await _read_row(database, RECORDED_RANK_STEP, key)
    if recorded is None:
        raise run_not_found(run_id)
    if recorded["lr"] is None:
        return None
    if report.rank is not None:
        check_rank(Ranks.of(json_from_text(recorded["ranks"])), report.rank)
        check_repeated_report(recorded["rank_metrics"], report.metrics, report.rank, report.step)
    return _replay_answer(recorded)


async def current_lr(
    database: Database,
    run_id: str,
    step: int | None,
    *,
    wait: float = 0.0,
    waiters: StepWaiters | None = None,
) -> dict[str, Any]:
    """GET /lr: the run's current values (a POST /lr shows here at once), or step K's row.

    A ranked run's next step may be waiting for ranks: then this waits up to ``wait``
    seconds for the decision (holding no connection while it waits), decides it itself
    once its timeout has passed, and answers pending (202) if it is still undecided.
    """
    if step is None:
        row = await _read_row(database, CURRENT_LR, {"run_id": run_id})
        if row is None:
            raise run_not_found(run_id)
        return _lr_answer(row)
    row = await _read_row(database, RECORDED_STEP, {"run_id": run_id, "step": step})
    if row is None:
        raise run_not_found(run_id)
    if row["lr"] is None:
        pending = await wait_for_decision(database, run_id, step, wait, waiters)
        if pending is not None:
            return pending.answer()
        row = await _read_row(database, RECORDED_STEP, {"run_id": run_id, "step": step})
        if row is None:
            raise run_not_found(run_id)
        if row["lr"] is None:
            raise NotFound(f"step {step} is not on run {run_id!r}'s current line of history")
    return _lr_answer(row)


def _lr_answer(row: Row) -> dict[str, Any]:
    answer: dict[str, Any] = {"step": row["step"], "lr": json_from_text(row["lr"])}
    momentum = json_from_text(row["momentum"])
    if momentum is not None:
        answer["momentum"] = momentum
    return answer


async def wait_for_decision(
    database: Database,
    run_id: str,
    step: int,
    wait: float,
    waiters: StepWaiters | None,
) -> Pending | None:
    """Wait for a ranked run's step ``step`` to be decided: None once it is (or once it is
    clear nobody is deciding it: not the run's next step, or not a ranked run), else the
    pending state when ``wait`` has run out.

    No connection is held while waiting: each look is one autocommit read, and between
    looks the request sleeps until this process decides the step (``waiters``) or the
    next look is due, since another replica may decide it. Past the step's timeout the
    waiting reader decides it (the ranks present), in its own write transaction.
    """
    deadline = time.monotonic() + wait
    pause = FIRST_LOOK_SECONDS
    with waiting_for(waiters, run_id, step) as decided:
        while True:
            status = await _read_row(database, RANKED_STEP_STATUS, {"run_id": run_id, "step": step})
            if status is None:
                raise run_not_found(run_id)
            ranks = Ranks.of(json_from_text(status["ranks"]))
            if ranks is None or status["run_step"] + 1 != step:
                return None
            due: float | None = None
            if status["reported"]:
                waited = (utc_now() - as_utc(status["first_reported_at"])).total_seconds()
                due = ranks.timeout_s - waited
                if due <= 0:
                    await _decide_timed_out(database, run_id, step, waiters)
                    return None
            left = deadline - time.monotonic()
            if left <= 0:
                return Pending(step, status["reported"], ranks.world_size)
            sleep = min(pause, left) if due is None else min(pause, left, due)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(decided.wait(), sleep)
            pause = min(pause * 2, LAST_LOOK_SECONDS)


async def _decide_timed_out(
    database: Database, run_id: str, step: int, waiters: StepWaiters | None
) -> None:
    """Decide ``step`` with the ranks present: its timeout passed and nobody reported since."""
    outcome = await _in_write_transaction(
        database, functools.partial(_record_timed_out_step, run_id, step)
    )
    if isinstance(outcome, Problem):  # a schedule failure, recorded; the reports will meet it
        return
    if waiters is not None:
        waiters.decided(run_id, step)


# -- the logic of a step report's write, once for both drivers ------------------------


def _record_step(
    run_id: str, report: StepReport, catch_up: CatchUpLimit, timestamp: Callable[[datetime], Any]
) -> Unit:
    """Lock the run, look again, then replay, refuse, wait for the other ranks, or advance
    and record."""
    locked = yield Fetch(LOCK_RUN, {"run_id": run_id})
    if locked is None:
        raise run_not_found(run_id)
    ranks = Ranks.of(json_from_text(locked["ranks"]))
    check_rank(ranks, report.rank)
    if report.step <= locked["step"]:
        recorded = yield Fetch(CURRENT_ROW, {"run_pk": locked["run_pk"], "step": report.step})
        assert recorded is not None  # every step up to the run's is on its current line
        if report.rank is not None:
            key = {"run_pk": locked["run_pk"], "step": report.step, "rank": report.rank}
            mine = yield Fetch(RANK_REPORT, key)
            stored = None if mine is None else mine["metrics"]
            check_repeated_report(stored, report.metrics, report.rank, report.step)
        return _replay_answer(recorded)
    _check_running(run_id, locked)
    now = utc_now()
    recorded_at = timestamp(now)
    scheduler = _restore(locked, report.step, catch_up)
    target = _Target(report.step, report.metrics, report.worker, [])
    if ranks is not None and scheduler.uses_metric:
        if report.rank is None:
            raise invalid(
                ["body", "rank"],
                f"this run waits for every rank's metric (world_size {ranks.world_size}): "
                "each report of a new step names its rank",
            )
        _check_metrics_readable(locked, report.metrics)
        own = (report.rank, report.metrics, report.worker, recorded_at)
        collected = yield from collect(locked["run_pk"], ranks, report.step, now, report=own)
        if isinstance(collected, Pending):
            return collected.answer()
        assert collected is not None  # this report's own row is there
        target = _Target(report.step, collected.metrics, report.worker, collected.events)
    return (yield from _advance_and_record(locked, scheduler, target, recorded_at))


def _record_timed_out_step(run_id: str, step: int, timestamp: Callable[[datetime], Any]) -> Unit:
    """A reader's decision of a ranked step whose timeout passed (see wait_for_decision)."""
    locked = yield Fetch(LOCK_RUN, {"run_id": run_id})
    ranks = None if locked is None else Ranks.of(json_from_text(locked["ranks"]))
    if locked is None or ranks is None or locked["step"] + 1 != step:
        return {}  # decided (or rewound) meanwhile
    if locked["status"] in STOPPED_STATUSES:
        return {}
    now = utc_now()
    scheduler = _restore(locked, step, None)
    if not scheduler.uses_metric:
        return {}
    collected = yield from collect(locked["run_pk"], ranks, step, now, report=None)
    if not isinstance(collected, Decision):
        return {}
    target = _Target(step, collected.metrics, None, collected.events)
    return (yield from _advance_and_record(locked, scheduler, target, timestamp(now)))


def _check_running(run_id: str, locked: Row) -> None:
    if locked["status"] in STOPPED_STATUSES:
        raise RunNotRunning(
            f"run {run_id!r} is {locked['status']}, so it takes no new steps (it is at step "
            f'{locked["step"]}); PATCH its status to "running" to reopen it',
            status=locked["status"],
            step=locked["step"],
        )


def _check_metrics_readable(locked: Row, metrics: Mapping[str, float]) -> None:
    """Refuse a rank's report the schedule could not read (its monitored metric missing)
    now, not when the last rank's report meets it: a throwaway engine steps on it."""
    probe = schedules.restore(
        json_from_text(locked["scheduler"]),
        json_from_text(locked["param_groups"]),
        json_from_text(locked["state"]),
    )
    # A failure is the decision's to record (once, as an event); a schedule past its end
    # refuses every rank alike, so it is told now.
    with contextlib.suppress(ScheduleFailed):
        _step_engine(probe, metrics)


@dataclass(frozen=True)
class _Target:
    """The step a write advances the run to, and what goes on its row."""

    step: int
    metrics: Mapping[str, float]
    worker: str | None
    # Recorded before the engine's own events at that step (a ranks timeout).
    events: list[dict[str, Any]]


def _advance_and_record(
    locked: Row, scheduler: Scheduler, target: _Target, recorded_at: Any
) -> Unit:
    """Advance the engine to ``target`` and record it, or record the schedule's failure."""
    try:
        advance = _advance(locked, scheduler, target, recorded_at)
    except ScheduleFailed as failure:
        # Told once per failing step, however many ranks report it; the run stays as it was.
        event = {"kind": "schedule_failed", "detail": failure.event_detail()}
        key = {"run_pk": locked["run_pk"], "step": failure.step, "kind": event["kind"]}
        if (yield Fetch(EVENT_RECORDED, key)) is None:
            yield Record([], [event_row(locked["run_pk"], failure.step, event, recorded_at)])
        return failure
    yield Record(advance.step_rows, advance.event_rows)
    yield from record_passed_blocks(locked["run_pk"], locked["step"], target.step, advance.points)
    return advance.answer


def _replay_answer(recorded: Row) -> dict[str, Any]:
    """What the recorded step answered when it was new, with ``replayed: true``."""
    stop = recorded["stop"]
    return step_answer(
        recorded["step"],
        json_from_text(recorded["lr"]),
        json_from_text(recorded["momentum"]),
        True,
        json_from_text(recorded["events"]),
        None if stop is None else bool(stop),  # sqlite3 answers 0/1
    )


@dataclass(frozen=True)
class _Advance:
    """What advancing a run writes (driver parameters by name) and what it answers."""

    step_rows: list[dict[str, Any]]  # the new Step rows; the last one's values go on the run
    event_rows: list[dict[str, Any]]
    answer: dict[str, Any]
    points: list[Point]  # the new steps' values, for service.runs.extremes


def _check_catch_up(
    gap: int, group_count: int, catch_up: CatchUpLimit, *, run_step: int, target: int
) -> None:
    """Refuse a gap too long to catch up in one transaction, naming the setting it breaks."""
    ahead = f"step {target} is {gap} steps ahead of the run (at step {run_step})"
    if gap > catch_up.steps:
        limit, maximum = "max_catch_up_steps", catch_up.steps
        message = f"{ahead}; at most {catch_up.steps} steps are caught up in one report"
    elif gap * group_count > catch_up.values:
        limit, maximum = "max_catch_up_values", catch_up.values
        message = (
            f"{ahead}; with {group_count} param groups at most "
            f"{catch_up.values // group_count} steps are caught up in one report "
            f"(LRKEEPER_MAX_CATCH_UP_VALUES = {catch_up.values} lr values)"
        )
    else:
        return
    raise invalid(["body", "step"], message, limit=limit, max=maximum)


def _restore(locked: Row, target: int, catch_up: CatchUpLimit | None) -> Scheduler:
    """The locked run's engine, after refusing a gap it cannot or may not step over."""
    run_step = locked["step"]
    gap = target - run_step
    param_groups = json_from_text(locked["param_groups"])
    if catch_up is not None:
        _check_catch_up(gap, len(param_groups), catch_up, run_step=run_step, target=target)
    # The engine refuses non-finite config values, so a stored config needs no decoding.
    scheduler = schedules.restore(
        json_from_text(locked["scheduler"]), param_groups, json_from_text(locked["state"])
    )
    if gap > 1 and scheduler.uses_metric:
        raise StepOutOfOrder(
            f"this schedule reads a metric at every step, so the next report must be "
            f"step {run_step + 1}, not {target}",
            expected_step=run_step + 1,
        )
    return scheduler


def _advance(locked: Row, scheduler: Scheduler, target: _Target, recorded_at: Any) -> _Advance:
    """Step the engine from the locked run to ``target.step``, which is past the run's step;
    the target's metrics go with its step."""
    run_pk, run_step = locked["run_pk"], locked["step"]
    step_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    answer_events: list[dict[str, Any]] = []
    points: list[Point] = []
    for step in range(run_step + 1, target.step + 1):
        is_last = step == target.step
        outcome = _step_engine(scheduler, target.metrics if is_last else None)
        events = event_dicts(outcome.events)
        if is_last and target.events:
            events = [*target.events, *events]
        answer_events.extend(events)
        event_rows.extend(event_row(run_pk, step, event, recorded_at) for event in events)
        lr = encode_floats(outcome.lr)
        momentum = encode_floats(outcome.momentum)
        points.append(Point(step, lr, momentum, None))
        step_rows.append(
            {
                "run_pk": run_pk,
                "step": step,
                "lr": json_text(lr),
                "momentum": json_text(momentum),
                "state": json_text(scheduler.state()),
                "metrics": json_text(encode_floats(dict(target.metrics))) if is_last else "{}",
                "worker": target.worker,
                # A replay of the reported step answers what this report answered.
                "events": json_text(answer_events if is_last else events),
                "stop": outcome.stop,
                "now": recorded_at,
            }
        )
    answer = step_answer(target.step, lr, momentum, False, answer_events, outcome.stop)
    # The reported metrics go on the last row, which no block passed by this report holds.
    return _Advance(step_rows, event_rows, answer, points)


def _step_engine(scheduler: Scheduler, metrics: Mapping[str, float] | None) -> StepOutcome:
    """One engine step, its refusals turned into the problems API.md names."""
    try:
        return scheduler.step(metrics)
    except schedules.MissingMetric as error:
        raise invalid(["body", "metrics", error.name], str(error)) from None
    except schedules.StepPastEnd as error:
        raise ScheduleEnded(str(error), step=error.step, total_steps=error.total_steps) from None
    except schedules.InvalidStepValue as error:
        raise ScheduleFailed(
            str(error), step=error.step, parameter=error.parameter, reason=error.reason
        ) from None


# -- the drivers -------------------------------------------------------------------


@retry_on_conflict
async def _read_row(
    database: Database, statement: HotStatement, values: Mapping[str, Any]
) -> Row | None:
    """One row in autocommit: asyncpg on the loop (PostgreSQL); on SQLite the loop's
    read-only connection (service.db.LoopReader), or a worker thread when it is busy."""
    pool = database.hot_path_pool
    if pool is not None:
        async with _pooled(pool) as connection:
            row: Row | None = await connection.fetchrow(
                statement.asyncpg, *statement.asyncpg_args(values)
            )
            return row
    if database.loop_reader is not None:
        with contextlib.suppress(sqlite3.OperationalError):  # busy: the thread may wait
            return database.loop_reader.fetch_one(statement.sqlite, values)
    return await to_thread.run_sync(_read_row_in_thread, database, statement, values)


def _read_row_in_thread(
    database: Database, statement: HotStatement, values: Mapping[str, Any]
) -> Row | None:
    with database.read_engine.connect() as connection:
        row: Row | None = _sqlite_cursor(connection).execute(statement.sqlite, values).fetchone()
        return row


@retry_on_conflict
async def _in_write_transaction(database: Database, make_unit: UnitFactory) -> Outcome:
    """Run a unit of work in one write transaction, committed before this returns."""
    pool = database.hot_path_pool
    if pool is not None:
        async with _pooled(pool) as connection, connection.transaction():
            return await _run_on_asyncpg(connection, make_unit(_same))
    return await to_thread.run_sync(_run_on_sqlite, database, make_unit(sqlite_timestamp))


def _run_on_sqlite(database: Database, unit: Unit) -> Outcome:
    """Drive ``unit`` on sqlite3's cursor, in ``BEGIN IMMEDIATE`` (service.db), in a thread."""
    with database.write_lock, database.engine.begin() as connection:
        cursor = _sqlite_cursor(connection)
        reply: Any = None
        while True:
            try:
                request = unit.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply = None
            if isinstance(request, Fetch):
                reply = cursor.execute(request.statement.sqlite, request.values).fetchone()
                continue
            if isinstance(request, FetchRows):
                reply = cursor.execute(request.statement.sqlite, request.values).fetchall()
                continue
            if isinstance(request, StoreExtremes):
                cursor.executemany(INSERT_EXTREMES.sqlite, request.rows)
                continue
            if isinstance(request, Execute):
                cursor.execute(request.statement.sqlite, request.values)
                continue
            if request.step_rows:
                cursor.executemany(INSERT_STEP.sqlite, request.step_rows)
                cursor.execute(UPDATE_RUN.sqlite, request.step_rows[-1])
            if request.event_rows:
                cursor.executemany(INSERT_EVENT.sqlite, request.event_rows)


async def _run_on_asyncpg(connection: asyncpg.Connection, unit: Unit) -> Outcome:
    """Drive ``unit`` on one asyncpg connection, inside the caller's transaction."""
    reply: Any = None
    while True:
        try:
            request = unit.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply = None
        if isinstance(request, Fetch):
            statement = request.statement
            reply = await connection.fetchrow(
                statement.asyncpg, *statement.asyncpg_args(request.values)
            )
            continue
        if isinstance(request, FetchRows):
            statement = request.statement
            values = statement.asyncpg_args(request.values)
            reply = await connection.fetch(statement.asyncpg, *values)
            continue
        if isinstance(request, StoreExtremes):
            await connection.executemany(
                INSERT_EXTREMES.asyncpg, [INSERT_EXTREMES.asyncpg_args(row) for row in request.rows]
            )
            continue
        if isinstance(request, Execute):
            statement = request.statement
            await connection.execute(statement.asyncpg, *statement.asyncpg_args(request.values))
            continue
        rows = request.step_rows
        if len(rows) == 1:
            await connection.execute(
                RECORD_ONE_STEP.asyncpg, *RECORD_ONE_STEP.asyncpg_args(rows[0])
            )
        elif rows:
            await connection.executemany(
                INSERT_STEP.asyncpg, [INSERT_STEP.asyncpg_args(row) for row in rows]
            )
            await connection.execute(UPDATE_RUN.asyncpg, *UPDATE_RUN.asyncpg_args(rows[-1]))
        if request.event_rows:
            await connection.executemany(
                INSERT_EVENT.asyncpg, [INSERT_EVENT.asyncpg_args(row) for row in request.event_rows]
            )


def _sqlite_cursor(connection: Any) -> sqlite3.Cursor:
    """A cursor of the sqlite3 connection SQLAlchemy checked out: same transaction, rows by name."""
    cursor: sqlite3.Cursor = connection.connection.driver_connection.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor


def _same(moment: datetime) -> datetime:
    return moment


@contextlib.asynccontextmanager
async def _pooled(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection; after a lost one, the pool's others are replaced too.

    A server restart or failover ends every session at once; expiring the pool's
    connections spares the retry (:func:`retry_on_conflict`) from meeting them one by one.
    """
    try:
        async with pool.acquire(timeout=DATABASE_WAIT_SECONDS) as connection:
            yield connection
    except ASYNCPG_CONNECTION_LOST:
        await pool.expire_connections()
        raise
