"""Per-block extremes of a run's series, kept on write so a thinned history reads few rows.

A **series** is one line a chart draws: the lr of each param group (``lr.0``, ...),
the momentum of each group when the schedule cycles it (``momentum.0``, ...), and
each reported metric by name (``metrics.<name>``). The **extremes** of a series over
some steps are its lowest value with that value's step and its highest with its
step; on a tie the earliest step wins, so every reader picks the same rows.

NaN is not ordered, so a NaN value is left out of the extremes (a series that is
NaN over a whole block has no entry there); ±Infinity are ordered like any number
and are kept. Values are stored codec-encoded (service.schedules.codec).

Blocks: ``WIDTHS`` are block sizes in steps, each four times the one before, so
any block of a wider size is exactly four blocks of the next narrower one. Block
``k`` of width ``W`` covers steps ``k·W`` to ``(k+1)·W − 1``. It is written in the
transaction of the step report that moves the run past its last step (run step >
last step), finest width first, the wider ones merged from the narrower: so the
rows it summarises are final (a ``POST /lr`` changes the run's current values, never
a recorded row, and the current step's row is in no block yet), and a rewind to
step ``t`` deletes the blocks whose last step is ``t`` or later in its own
transaction (service.runs.changes), since those are the ones whose steps it
supersedes or that the run has not passed any more.

A wider block whose narrower blocks are not all stored (a run older than this
table) is not written; readers fall back to narrower blocks and finally to rows.
"""

import itertools
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.runs.statements import (
    FetchRows,
    HotStatement,
    extremes_columns,
    extremes_table,
    json_from_text,
    json_text,
)
from service.schedules.codec import decode_float, encode_floats

WIDTHS = (16, 64, 256, 1024, 4096, 16384, 65536)

# lowest, its step (or row position), highest, its step
Extreme = tuple[Any, int, Any, int]
Extremes = dict[str, Extreme]


@dataclass(frozen=True)
class Point:
    """One recorded step's values as stored (codec-encoded), for summarising."""

    step: int
    lr: Sequence[Any]
    momentum: Sequence[Any] | None
    metrics: Mapping[str, Any] | None


def series_values(point: Point) -> Iterable[tuple[str, Any]]:
    """Every series' decoded value at ``point``, NaN left out (it has no order)."""
    for group, value in enumerate(point.lr):
        yield f"lr.{group}", value
    for group, value in enumerate(point.momentum or ()):
        yield f"momentum.{group}", value
    for name, value in (point.metrics or {}).items():
        yield f"metrics.{name}", value


def add_value(extremes: Extremes, series: str, encoded: Any, position: int) -> None:
    """Fold one value into ``extremes``; ``position`` orders ties (earliest wins)."""
    value = decode_float(encoded) if type(encoded) is str else encoded
    if value != value:
        return
    _fold(extremes, series, (value, position, value, position))


def add_point(extremes: Extremes, point: Point) -> None:
    for series, encoded in series_values(point):
        add_value(extremes, series, encoded, point.step)


def merge_into(extremes: Extremes, other: Mapping[str, Extreme]) -> None:
    """Fold another block's extremes into ``extremes`` (same tie rule as :func:`add_value`)."""
    for series, extreme in other.items():
        _fold(extremes, series, extreme)


def _fold(extremes: Extremes, series: str, extreme: Extreme) -> None:
    """One series' lowest and highest so far, with ``extreme`` taken in (earliest wins ties)."""
    current = extremes.get(series)
    if current is None:
        extremes[series] = extreme
        return
    low, low_at, high, high_at = current
    lowest, lowest_at, highest, highest_at = extreme
    if lowest < low or (lowest == low and lowest_at < low_at):
        low, low_at = lowest, lowest_at
    if highest > high or (highest == high and highest_at < high_at):
        high, high_at = highest, highest_at
    extremes[series] = (low, low_at, high, high_at)


def encoded_extremes(extremes: Extremes) -> dict[str, list[Any]]:
    return {series: encode_floats(list(extreme)) for series, extreme in extremes.items()}


def decoded_extremes(stored: Mapping[str, Sequence[Any]]) -> Extremes:
    return {
        series: (decode_float(low), low_at, decode_float(high), high_at)
        for series, (low, low_at, high, high_at) in stored.items()
    }


def passed_buckets(width: int, run_step: int, target: int) -> range:
    """The blocks whose last step is in [run_step, target − 1]: the ones a report passes."""
    return range(run_step // width, target // width)


def point_from_row(row: Mapping[str, Any]) -> Point:
    """A steps row as the hot path's drivers return it (JSON as text)."""
    return Point(
        row["step"],
        json_from_text(row["lr"]),
        json_from_text(row["momentum"]),
        json_from_text(row["metrics"]),
    )


# -- the write side: what a step report asks of its driver ------------------------------

STORED_POINTS = HotStatement.of(
    """
SELECT step, lr, momentum, metrics FROM steps
WHERE run_pk = :run_pk AND step >= :first AND step <= :last AND NOT superseded"""
)

STORED_EXTREMES = HotStatement.of(
    """
SELECT bucket, extremes FROM step_extremes
WHERE run_pk = :run_pk AND width = :width AND bucket >= :first AND bucket <= :last"""
)

INSERT_EXTREMES = HotStatement.of(
    """
INSERT INTO step_extremes (run_pk, width, bucket, extremes)
VALUES (:run_pk, :width, :bucket, :extremes)"""
)


@dataclass(frozen=True)
class StoreExtremes:
    """Insert these step_extremes rows (driver parameters by name)."""

    rows: Sequence[Mapping[str, Any]]


ExtremesUnit = Generator[FetchRows | StoreExtremes, Sequence[Mapping[str, Any]] | None, None]


def record_passed_blocks(
    run_pk: int, run_step: int, target: int, new_points: Sequence[Point]
) -> ExtremesUnit:
    """Write the extremes of every block the run moves past going from run_step to target.

    ``new_points`` are the steps this report records (run_step + 1 .. target), still
    in hand; earlier steps of the first block are read back. 15 reports in 16 pass no
    block and cost nothing here.
    """
    finest = WIDTHS[0]
    buckets = passed_buckets(finest, run_step, target)
    if not buckets:
        return
    stored = yield FetchRows(
        STORED_POINTS,
        {"run_pk": run_pk, "first": buckets.start * finest, "last": run_step},
    )
    made: dict[int, Extremes] = {bucket: {} for bucket in buckets}
    for point in [*(point_from_row(row) for row in stored or ()), *new_points]:
        block = made.get(point.step // finest)
        if block is not None:
            add_point(block, point)
    rows = [_extremes_row(run_pk, finest, bucket, extremes) for bucket, extremes in made.items()]
    for narrower, width in itertools.pairwise(WIDTHS):
        wider_buckets = passed_buckets(width, run_step, target)
        if not wider_buckets or not made:
            break
        ratio = width // narrower
        # Narrower blocks passed before this report are stored (or predate the table).
        earlier_last = run_step // narrower - 1
        children = dict(made)
        if wider_buckets.start * ratio <= earlier_last:
            for row in (
                yield FetchRows(
                    STORED_EXTREMES,
                    {
                        "run_pk": run_pk,
                        "width": narrower,
                        "first": wider_buckets.start * ratio,
                        "last": earlier_last,
                    },
                )
            ) or ():
                children[row["bucket"]] = decoded_extremes(json_from_text(row["extremes"]))
        made = {}
        for bucket in wider_buckets:
            parts = [children.get(bucket * ratio + offset) for offset in range(ratio)]
            present = [part for part in parts if part is not None]
            if len(present) < ratio:
                continue
            merged: Extremes = {}
            for part in present:
                merge_into(merged, part)
            made[bucket] = merged
            rows.append(_extremes_row(run_pk, width, bucket, merged))
    yield StoreExtremes(rows)


def _extremes_row(run_pk: int, width: int, bucket: int, extremes: Extremes) -> dict[str, Any]:
    return {
        "run_pk": run_pk,
        "width": width,
        "bucket": bucket,
        "extremes": json_text(encoded_extremes(extremes)),
    }


def forget_extremes_from(connection: Connection, run_pk: int, step: int) -> None:
    """A rewind to ``step``: drop the blocks whose last step is ``step`` or later.

    Their rows are superseded, or (the block ending at ``step``) the run has not
    passed them any more; the report that passes them again writes them anew.
    """
    connection.execute(
        sa.delete(extremes_table).where(
            extremes_columns.run_pk == run_pk,
            sa.or_(
                *(
                    sa.and_(
                        extremes_columns.width == width,
                        extremes_columns.bucket >= step // width,
                    )
                    for width in WIDTHS
                )
            ),
        )
    )
