"""``GET /history?points=P``: a long run's history cut to about P rows that keep every extreme.

The rule, exactly (so a chart, a test or another client can recompute it):

1. The range is ``start`` (default 0) to ``end`` (default, and at most, the run's
   step), on the current line of history.
2. ``S`` is the number of series (service.runs.extremes) that have a value in the
   range: the groups' lrs, their momenta when cycled, each metric name.
3. ``buckets = max(1, (P − 2) // (2·S) − 1)``; the wanted bucket width is
   ``ceil((end − start + 1) / buckets)``. The width used, ``bucket_steps``, is that
   rounded up to a multiple of the widest stored block size not above it (a multiple
   of 1 below 16 steps), so whole blocks make up a bucket.
4. Buckets lie on the run's step grid: bucket ``b`` holds steps ``b·w`` to
   ``(b+1)·w − 1``, clipped to the range (the first and last may be partial).
5. The answer is the rows at ``start``, at ``end``, and at the step of every series'
   lowest and highest value in every bucket (ties: the earliest step; NaN values are
   not ordered and never chosen for themselves), in step order. At most
   ``max(P, 4·S + 2)`` rows: the buckets are at most ``buckets + 1`` (the grid's
   offset from ``start`` may split one), each giving at most ``2·S`` steps.

Steps 3 and 4 are what let the extremes come from stored blocks: a bucket is a
union of blocks, and the range's partial ends are covered by narrower blocks and,
finally, by the rows themselves. A block that is missing (a run older than the
table) is covered the same way, so a run that predates it is answered correctly,
only more slowly.

With ``include_superseded=true`` the rows a rewind superseded within the range are
thinned by the same rule in the same buckets, as one population of their own, from
the rows themselves (no blocks summarise superseded rows): the answer holds both,
in (step, row) order, and costs a read of every superseded row in the range.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.db import Database
from service.runs.answers import invalid
from service.runs.extremes import (
    WIDTHS,
    Extremes,
    Point,
    add_point,
    add_value,
    decoded_extremes,
    merge_into,
    series_values,
)
from service.runs.history import (
    HISTORY_COLUMNS,
    HistoryPage,
    HistoryQuery,
    history_item,
    run_summary,
)
from service.runs.retrying import retry_on_conflict
from service.runs.statements import extremes_columns, step_columns

MIN_POINTS = 2


@dataclass(frozen=True)
class ThinnedPage(HistoryPage):
    """A thinned history: every item of it, plus what a chart needs to know about the cut."""

    points: int
    bucket_steps: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "thinned": {"points": self.points, "bucket_steps": self.bucket_steps},
        }


@dataclass(frozen=True)
class Cell:
    """Extremes over steps that lie inside one block of ``block`` steps, from ``first_step``."""

    first_step: int
    extremes: Extremes


def check_thinning_query(query: HistoryQuery, points: int, max_points: int) -> None:
    """``points`` is one whole answer: paging and ``every`` have no meaning beside it."""
    if not MIN_POINTS <= points <= max_points:
        raise invalid(
            ["query", "points"], f"must be between {MIN_POINTS} and {max_points}, got {points}"
        )
    for name, given in (("cursor", query.cursor), ("limit", query.limit)):
        if given is not None:
            raise invalid(["query", name], f"{name} pages a full history; points answers at once")
    if query.every != 1:
        raise invalid(["query", "every"], "every and points both thin a history; give one")
    if query.start is not None and query.end is not None and query.end < query.start:
        raise invalid(["query", "end"], f"end ({query.end}) is before start ({query.start})")


def bucket_width(span: int, points: int, series: int) -> tuple[int, int]:
    """Rule steps 3: (the bucket width, the block size it is a multiple of)."""
    buckets = max(1, (points - 2) // (2 * max(series, 1)) - 1)
    wanted = -(-span // buckets)
    block = max((width for width in WIDTHS if width <= wanted), default=1)
    return -(-wanted // block) * block, block


@retry_on_conflict
def thinned_history(
    database: Database, run_id: str, query: HistoryQuery, points: int, *, max_points: int
) -> ThinnedPage:
    """The rows that keep every bucket's extremes; see the module docstring for the rule."""
    check_thinning_query(query, points, max_points)
    with database.read_engine.connect() as connection:
        run = run_summary(connection, run_id)
        first = query.start or 0
        last = run.step if query.end is None else min(query.end, run.step)
        group_count, cycles = len(run.lr), run.momentum is not None
        least_series = group_count * (2 if cycles else 1)
        width, block = bucket_width(max(last - first + 1, 1), points, least_series)
        chosen_steps: set[int] = set()
        if first <= last:
            cells = _Gatherer(connection, run.id, block).cover(first, last, _widths_up_to(block))
            series = {name for cell in cells for name in cell.extremes}
            width, _ = bucket_width(last - first + 1, points, max(len(series), least_series))
            chosen_steps = {first, last} | _extreme_positions(
                (cell.first_step // width, cell.extremes) for cell in cells
            )
        rows = list(_current_rows(connection, run.id, sorted(chosen_steps)))
        if query.include_superseded:
            rows.extend(_thinned_superseded(connection, run.id, query, width))
            rows.sort(key=lambda row: (row.step, row.id))
    return ThinnedPage(
        items=[history_item(row) for row in rows],
        next_cursor=None,
        group_count=group_count,
        cycles_momentum=cycles,
        points=points,
        bucket_steps=width,
    )


def _widths_up_to(block: int) -> list[int]:
    return [width for width in reversed(WIDTHS) if width <= block]


def _extreme_positions(bucketed: Iterable[tuple[int, Mapping[str, Any]]]) -> set[int]:
    """Merge extremes by bucket; the positions (steps or row ids) of every bucket's extremes."""
    by_bucket: dict[int, Extremes] = {}
    for bucket, extremes in bucketed:
        merge_into(by_bucket.setdefault(bucket, {}), extremes)
    positions: set[int] = set()
    for extremes in by_bucket.values():
        for _, lowest_at, _, highest_at in extremes.values():
            positions.add(lowest_at)
            positions.add(highest_at)
    return positions


class _Gatherer:
    """Covers a range with cells: the widest stored blocks inside it, then narrower, then rows.

    Every cell lies inside one ``block``-aligned block, so a bucket of any multiple of
    ``block`` steps is a union of whole cells. A few queries per width: one for the
    blocks inside the range, and one per run of missing blocks or ragged end below it.
    """

    def __init__(self, connection: Connection, run_pk: int, block: int) -> None:
        self.connection = connection
        self.run_pk = run_pk
        # Rows become cells of 16 steps (of one step when buckets are narrower).
        self.row_cell_steps = min(block, WIDTHS[0])

    def cover(self, first: int, last: int, widths: Sequence[int]) -> list[Cell]:
        if first > last:
            return []
        if not widths:
            return self._from_rows(first, last)
        width, narrower = widths[0], widths[1:]
        first_bucket, end_bucket = -(-first // width), (last + 1) // width
        if first_bucket >= end_bucket:
            return self.cover(first, last, narrower)
        stored = self._stored(width, first_bucket, end_bucket - 1)
        cells = self.cover(first, first_bucket * width - 1, narrower)
        missing_from: int | None = None
        for bucket in range(first_bucket, end_bucket):
            extremes = stored.get(bucket)
            if extremes is None:
                missing_from = bucket if missing_from is None else missing_from
                continue
            if missing_from is not None:
                cells += self.cover(missing_from * width, bucket * width - 1, narrower)
                missing_from = None
            cells.append(Cell(bucket * width, extremes))
        if missing_from is not None:
            cells += self.cover(missing_from * width, end_bucket * width - 1, narrower)
        cells += self.cover(end_bucket * width, last, narrower)
        return cells

    def _stored(self, width: int, first_bucket: int, last_bucket: int) -> dict[int, Extremes]:
        rows = self.connection.execute(
            sa.select(extremes_columns.bucket, extremes_columns.extremes).where(
                extremes_columns.run_pk == self.run_pk,
                extremes_columns.width == width,
                extremes_columns.bucket.between(first_bucket, last_bucket),
            )
        )
        return {row.bucket: decoded_extremes(row.extremes) for row in rows}

    def _from_rows(self, first: int, last: int) -> list[Cell]:
        rows = self.connection.execute(
            sa.select(
                step_columns.step, step_columns.lr, step_columns.momentum, step_columns.metrics
            ).where(
                step_columns.run_pk == self.run_pk,
                step_columns.step.between(first, last),
                sa.not_(step_columns.superseded),
            )
        )
        cells: dict[int, Extremes] = {}
        for row in rows:
            cell = cells.setdefault(row.step // self.row_cell_steps, {})
            add_point(cell, Point(row.step, row.lr, row.momentum, row.metrics))
        return [Cell(key * self.row_cell_steps, extremes) for key, extremes in cells.items()]


# PostgreSQL: one index probe per chosen step, whatever the statistics say. Given
# ``step = ANY(...)`` (or a plain join) over a freshly loaded run not yet analysed, its
# planner reads every row of the run and filters them: 0.7 s for a million steps
# instead of 5 ms. LIMIT 1 (there is one current row per step) keeps the LATERAL
# subquery from being flattened back into that join.
_PROBE_CHOSEN_STEPS = """
SELECT chosen_row.* FROM unnest(CAST(:steps AS integer[])) AS chosen(step)
CROSS JOIN LATERAL (
  SELECT id, step, lr, momentum, metrics, worker, recorded_at, superseded FROM steps
  WHERE run_pk = :run_pk AND step = chosen.step AND NOT superseded
  LIMIT 1
) AS chosen_row
ORDER BY chosen_row.step"""


def _current_rows(connection: Connection, run_pk: int, steps: Sequence[int]) -> Sequence[Any]:
    """The current line's rows at ``steps``, in step order (SQLite plans IN well)."""
    if not steps:
        return []
    if connection.dialect.name == "postgresql":
        probe = sa.text(_PROBE_CHOSEN_STEPS).columns(*HISTORY_COLUMNS)
        return connection.execute(probe, {"steps": list(steps), "run_pk": run_pk}).all()
    return connection.execute(
        sa.select(*HISTORY_COLUMNS)
        .where(
            step_columns.run_pk == run_pk,
            step_columns.step.in_(steps),
            sa.not_(step_columns.superseded),
        )
        .order_by(step_columns.step, step_columns.id)
    ).all()


def _thinned_superseded(
    connection: Connection, run_pk: int, query: HistoryQuery, width: int
) -> list[Any]:
    """The superseded rows in the range, thinned by the same rule; positions are row ids."""
    bounds = [step_columns.run_pk == run_pk, step_columns.superseded]
    if query.start is not None:
        bounds.append(step_columns.step >= query.start)
    if query.end is not None:
        bounds.append(step_columns.step <= query.end)
    rows = connection.execute(
        sa.select(
            step_columns.id,
            step_columns.step,
            step_columns.lr,
            step_columns.momentum,
            step_columns.metrics,
        ).where(*bounds)
    ).all()
    if not rows:
        return []
    by_bucket: dict[int, Extremes] = {}
    for row in rows:
        extremes = by_bucket.setdefault(row.step // width, {})
        for series, encoded in series_values(Point(row.step, row.lr, row.momentum, row.metrics)):
            add_value(extremes, series, encoded, row.id)
    first_row = min(rows, key=lambda row: (row.step, row.id))
    last_row = max(rows, key=lambda row: (row.step, -row.id))
    chosen = {first_row.id, last_row.id} | _extreme_positions(by_bucket.items())
    return list(
        connection.execute(
            sa.select(*HISTORY_COLUMNS).where(step_columns.id.in_(sorted(chosen)))
        ).all()
    )
