"""Reading a run's past: its steps, its events and a range test's suggestion.

Keyset pages over indexes (never OFFSET), read in autocommit on the read engine.
"""

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from service.db import Database
from service.problems import NotEnoughData
from service.runs.answers import (
    DEFAULT_HISTORY_LIMIT,
    Page,
    decode_cursor,
    encode_cursor,
    invalid,
    page_limit,
    run_not_found,
)
from service.runs.retrying import retry_on_conflict
from service.runs.statements import event_columns, iso_timestamp, run_columns, step_columns
from service.schedules import range_test
from service.schedules.codec import decode_floats, encode_floats

RANGE_TEST_TYPE = range_test.LRRangeTest.type_name


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


HISTORY_COLUMNS = (
    step_columns.id,
    step_columns.step,
    step_columns.lr,
    step_columns.momentum,
    step_columns.metrics,
    step_columns.worker,
    step_columns.recorded_at,
    step_columns.superseded,
)


def history_item(row: Row[Any]) -> dict[str, Any]:
    """One history item as API.md spells it, from a row of :data:`HISTORY_COLUMNS`."""
    item: dict[str, Any] = {"step": row.step, "lr": row.lr}
    if row.momentum is not None:
        item["momentum"] = row.momentum
    item.update(
        metrics=row.metrics,
        worker=row.worker,
        recorded_at=iso_timestamp(row.recorded_at),
        superseded=row.superseded,
    )
    return item


def run_summary(connection: Connection, run_id: str) -> Row[Any]:
    """The run's key and what reading its history needs to know about it; 404 if missing."""
    run = connection.execute(
        sa.select(
            run_columns.id,
            run_columns.lr,
            run_columns.momentum,
            run_columns.scheduler,
            run_columns.step,
        ).where(run_columns.run_id == run_id)
    ).first()
    if run is None:
        raise run_not_found(run_id)
    return run


@retry_on_conflict
def history(database: Database, run_id: str, query: HistoryQuery, *, max_limit: int) -> HistoryPage:
    """The run's steps in order, keyset-paged on (step, id) — never OFFSET."""
    limit = page_limit(query.limit, DEFAULT_HISTORY_LIMIT, max_limit)
    if query.start is not None and query.end is not None and query.end < query.start:
        raise invalid(["query", "end"], f"end ({query.end}) is before start ({query.start})")
    statement = (
        sa.select(*HISTORY_COLUMNS).order_by(step_columns.step, step_columns.id).limit(limit + 1)
    )
    if query.start is not None:
        statement = statement.where(step_columns.step >= query.start)
    if query.end is not None:
        statement = statement.where(step_columns.step <= query.end)
    if query.every > 1:
        statement = statement.where(step_columns.step % query.every == 0)
    if not query.include_superseded:
        statement = statement.where(sa.not_(step_columns.superseded))
    if query.cursor is not None:
        after_step, after_pk = decode_cursor(query.cursor, 2)
        statement = statement.where(
            sa.tuple_(step_columns.step, step_columns.id) > sa.tuple_(after_step, after_pk)
        )
    with database.read_engine.connect() as connection:
        run = run_summary(connection, run_id)
        rows = connection.execute(statement.where(step_columns.run_pk == run.id)).all()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.step, last.id)
    return HistoryPage(
        items=[history_item(row) for row in rows[:limit]],
        next_cursor=next_cursor,
        group_count=len(run.lr),
        cycles_momentum=run.momentum is not None,
    )


@dataclass(frozen=True)
class CsvLayout:
    """The columns of a CSV history: decided once, before the first row of a stream."""

    group_count: int
    cycles_momentum: bool
    metric_names: list[str]

    @classmethod
    def of_page(cls, page: HistoryPage) -> "CsvLayout":
        """One page's columns: the metric names its own rows carry, sorted."""
        names = sorted({name for item in page.items for name in item["metrics"]})
        return cls(page.group_count, page.cycles_momentum, names)


@retry_on_conflict
def csv_layout(database: Database, run_id: str, query: HistoryQuery) -> CsvLayout:
    """The columns of a whole streamed history: every metric name any row in range carries.

    One query over the range's rows (the metrics are JSON, so each dialect lists an
    object's keys its own way); a stream's header must hold before its first page.
    """
    conditions = ["run_pk = :run_pk"]
    values: dict[str, Any] = {}
    if query.start is not None:
        conditions.append("step >= :start")
        values["start"] = query.start
    if query.end is not None:
        conditions.append("step <= :end")
        values["end"] = query.end
    if query.every > 1:
        conditions.append("step % :every = 0")
        values["every"] = query.every
    if not query.include_superseded:
        conditions.append("NOT superseded")
    where = " AND ".join(conditions)
    if database.dialect == "postgresql":
        names_sql = f"SELECT DISTINCT jsonb_object_keys(metrics) AS name FROM steps WHERE {where}"
    else:
        names_sql = (
            "SELECT DISTINCT metric.key AS name FROM steps, json_each(steps.metrics) AS metric"
            f" WHERE {where}"
        )
    with database.read_engine.connect() as connection:
        run = run_summary(connection, run_id)
        values["run_pk"] = run.id
        names = sorted(row.name for row in connection.execute(sa.text(names_sql), values))
    return CsvLayout(len(run.lr), run.momentum is not None, names)


@retry_on_conflict
def list_events(
    database: Database, run_id: str, *, limit: int | None, cursor: str | None, max_limit: int
) -> Page:
    """The run's events in the order they happened, keyset-paged on their id."""
    limit = page_limit(limit, DEFAULT_HISTORY_LIMIT, max_limit)
    statement = (
        sa.select(
            event_columns.id,
            event_columns.step,
            event_columns.kind,
            event_columns.detail,
            event_columns.recorded_at,
        )
        .order_by(event_columns.id)
        .limit(limit + 1)
    )
    if cursor is not None:
        (after_pk,) = decode_cursor(cursor, 1)
        statement = statement.where(event_columns.id > after_pk)
    with database.read_engine.connect() as connection:
        run = run_summary(connection, run_id)
        rows = connection.execute(statement.where(event_columns.run_pk == run.id)).all()
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    items = [
        {
            "step": row.step,
            "kind": row.kind,
            "detail": row.detail,
            "recorded_at": iso_timestamp(row.recorded_at),
        }
        for row in rows[:limit]
    ]
    return Page(items, next_cursor)


@retry_on_conflict
def lr_suggestion(
    database: Database, run_id: str, method: str = range_test.DEFAULT_METHOD
) -> dict[str, Any]:
    """The range test's suggestion by ``method``, from the lrs and losses its current line
    recorded (every method's suggestion is answered too, in ``suggestions``).

    The loss reported with step k was measured at the lr recorded at step k - 1 (the
    worker trained with it, then stepped); the engine smooths them as the steps did.
    """
    with database.read_engine.connect() as connection:
        run = run_summary(connection, run_id)
        scheduler_type = run.scheduler["type"]
        if scheduler_type != RANGE_TEST_TYPE:
            raise invalid(
                ["path", "run_id"],
                f"run {run_id!r} is a {scheduler_type} schedule; "
                f"lr suggestions come from {RANGE_TEST_TYPE} runs only",
            )
        rows = connection.execute(
            sa.select(step_columns.lr, step_columns.metrics)
            .where(step_columns.run_pk == run.id, sa.not_(step_columns.superseded))
            .order_by(step_columns.step)
        ).all()
    monitor = run.scheduler["monitor"]
    measured_lrs = [float(decode_floats(row.lr[0])) for row in rows[:-1]]
    losses = [float(decode_floats(row.metrics[monitor])) for row in rows[1:]]
    curve = range_test.smoothed_curve(measured_lrs, losses)
    try:
        suggestion = range_test.suggest(curve, mode=run.scheduler["params"]["mode"], method=method)
    except range_test.NotEnoughData as error:
        raise NotEnoughData(
            str(error), usable_points=error.usable_points, required_points=error.required_points
        ) from None
    return encode_floats(suggestion)
