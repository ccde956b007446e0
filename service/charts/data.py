"""What a chart shows, gathered for a run (from the database) or for a preview (computed).

A :class:`Chart` holds plain numbers, already thinned to what a picture can show:
the lr of every group over the steps, momentum when it cycles, the metrics asked for,
the history a rewind superseded, and the events with the step each happened at.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from service.db import Database
from service.runs import catalog, thinning
from service.runs import history as run_history
from service.runs.answers import invalid
from service.runs.preview import PreviewedSchedule
from service.schedules.codec import decode_floats

Scale = Literal["log", "linear"]

# How many rows a chart draws at most, whatever the run's length; each bucket of steps
# keeps its first, last, lowest and highest row, so a spike or a drop is never sampled away.
MAX_POINTS_DRAWN = 4000
MAX_EVENTS_DRAWN = 200
MAX_DRAWN_MAGNITUDE = 1e300
MAX_METRICS_DRAWN = 8


@dataclass(frozen=True)
class Series:
    """One line: x (steps) and y values, non-finite values as NaN (a gap in the line)."""

    steps: list[int]
    values: list[float]


@dataclass(frozen=True)
class ChartEvent:
    step: int
    kind: str


@dataclass(frozen=True)
class Chart:
    """Everything one picture shows. ``lr`` and ``momentum`` hold a series per param group;
    ``superseded`` one list of per-group series for each stretch a rewind left behind."""

    title: str
    lr: list[Series]
    momentum: list[Series] | None = None
    metrics: dict[str, Series] = field(default_factory=dict)
    superseded: list[list[Series]] = field(default_factory=list)
    events: list[ChartEvent] = field(default_factory=list)


@dataclass(frozen=True)
class ChartQuery:
    """A run chart's query: the steps to show and the metrics besides the monitored one."""

    start: int | None
    end: int | None
    metrics: tuple[str, ...]


def parse_metric_names(names: str | None) -> tuple[str, ...]:
    """``metrics=loss,acc`` as names; an empty name or too many is a 422 naming ``metrics``."""
    if names is None:
        return ()
    parsed = tuple(name.strip() for name in names.split(","))
    if any(not name for name in parsed):
        raise invalid(["query", "metrics"], "a comma-separated list of metric names, none empty")
    if len(set(parsed)) > MAX_METRICS_DRAWN:
        raise invalid(
            ["query", "metrics"], f"at most {MAX_METRICS_DRAWN} metrics, got {len(set(parsed))}"
        )
    return tuple(dict.fromkeys(parsed))


def check_step_range(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and end < start:
        raise invalid(["query", "end"], f"end ({end}) is before start ({start})")


# -- a run --------------------------------------------------------------------------------


def run_chart(
    database: Database,
    run_id: str,
    query: ChartQuery,
    *,
    stale_after: float,
    max_history_limit: int,
) -> Chart:
    """The run's current line of history (and what rewinds superseded) from ``start`` to
    ``end``, its events there, its monitored metric and the ``metrics`` asked for.

    A metric asked for by name that no step in the range carries is a 422 naming
    ``metrics``; the monitored metric of a run that has not reported one yet is left out.
    """
    check_step_range(query.start, query.end)
    run = catalog.get_run(database, run_id, stale_after=stale_after)  # 404 first
    first = query.start or 0
    # The rows that keep every bucket's extremes (GET /history?points=, from the extremes
    # stored on write): a million-step run costs about what a thousand-step one does.
    page = thinning.thinned_history(
        database,
        run_id,
        run_history.HistoryQuery(
            start=query.start,
            end=query.end,
            limit=None,
            cursor=None,
            every=1,
            include_superseded=True,
        ),
        MAX_POINTS_DRAWN,
        max_points=MAX_POINTS_DRAWN,
    )
    rows = page.items
    current = [row for row in rows if not row["superseded"]]
    current_by_step = {int(row["step"]): row for row in current}
    superseded = [row for row in rows if row["superseded"]]

    monitored = [name for name in monitored_metrics(run["scheduler"]) if name not in query.metrics]
    reported = {name for row in current for name in row["metrics"]}
    missing = [name for name in query.metrics if name not in reported]
    if missing:
        raise invalid(
            ["query", "metrics"],
            f"no step in the range reported {', '.join(map(repr, missing))}"
            + (f" (reported: {', '.join(sorted(reported))})" if reported else ""),
        )
    metric_names = [name for name in monitored if name in reported] + list(query.metrics)

    groups = len(run["lr"])
    cycles_momentum = run.get("momentum") is not None
    steps = [int(row["step"]) for row in current]
    lr_columns = [[_number(row["lr"][group]) for row in current] for group in range(groups)]
    momentum_columns = (
        [[_number((row.get("momentum") or [math.nan] * groups)[group]) for row in current]
         for group in range(groups)]
        if cycles_momentum
        else []
    )  # fmt: skip
    metric_columns = [
        [_number(row["metrics"].get(name, math.nan)) for row in current] for name in metric_names
    ]
    kept = keep_extremes(steps, [*lr_columns, *momentum_columns, *metric_columns])
    return Chart(
        title=f"{run_id} · {run['scheduler']['type']}",
        lr=[_series(steps, column, kept) for column in lr_columns],
        momentum=[_series(steps, column, kept) for column in momentum_columns]
        if cycles_momentum
        else None,
        metrics={
            name: _without_gaps(_series(steps, column, kept))
            for name, column in zip(metric_names, metric_columns, strict=True)
        },
        superseded=[
            _lr_series(_joined(stretch, current_by_step), groups)
            for stretch in superseded_stretches(superseded, gap=page.bucket_steps)
        ],
        events=_run_events(database, run_id, first, query.end, max_history_limit),
    )


def _run_events(
    database: Database, run_id: str, first: int, last: int | None, max_history_limit: int
) -> list[ChartEvent]:
    page = run_history.list_events(
        database,
        run_id,
        limit=min(MAX_EVENTS_DRAWN, max_history_limit),
        cursor=None,
        max_limit=max_history_limit,
    )
    return [
        ChartEvent(step=int(event["step"]), kind=str(event["kind"]))
        for event in page.items
        if event["step"] is not None
        and event["step"] >= first
        and (last is None or event["step"] <= last)
    ]


def superseded_stretches(
    rows: Iterable[Mapping[str, Any]], gap: int = 1
) -> list[list[Mapping[str, Any]]]:
    """Superseded rows (in history's (step, id) order) split into the stretches they were
    recorded as: a row continues the first stretch that ended at most ``gap`` steps before
    it (1 for a full history; a thinned one keeps a few rows per bucket of ``gap`` steps),
    so two rewinds over the same steps draw as two lines, not one zigzag."""
    stretches: list[list[Mapping[str, Any]]] = []
    for row in rows:
        step = int(row["step"])
        stretch = next((s for s in stretches if 1 <= step - int(s[-1]["step"]) <= gap), None)
        if stretch is None:
            stretches.append([row])
        else:
            stretch.append(row)
    return stretches


def _joined(
    stretch: list[Mapping[str, Any]], current_by_step: Mapping[int, Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """A superseded stretch starting from the current row it branched off (the rewind's
    step), so the faded line leaves the current one where the run left it."""
    branch = current_by_step.get(int(stretch[0]["step"]) - 1)
    return stretch if branch is None else [branch, *stretch]


def _lr_series(rows: Sequence[Mapping[str, Any]], groups: int) -> list[Series]:
    steps = [int(row["step"]) for row in rows]
    columns = [[_number(row["lr"][group]) for row in rows] for group in range(groups)]
    kept = keep_extremes(steps, columns)
    return [_series(steps, column, kept) for column in columns]


def monitored_metrics(config: Mapping[str, Any]) -> list[str]:
    """The metric names a scheduler config (composites included) reads, in config order."""
    names = [str(config["monitor"])] if config.get("monitor") else []
    for child in config.get("params", {}).get("schedulers", ()) or ():
        if isinstance(child, Mapping):
            names.extend(name for name in monitored_metrics(child) if name not in names)
    return names


# -- a preview ------------------------------------------------------------------------------


def preview_chart(
    schedule: PreviewedSchedule, scheduler_type: str, monitor: str | None, metrics: Sequence[Any]
) -> Chart:
    """A previewed schedule, with its metrics (``metrics[i]`` reported with step i+1) drawn
    under the name the schedule monitors."""
    steps = list(range(len(schedule.lrs)))
    groups = len(schedule.lrs[0])
    lr_columns = [[_number(row[group]) for row in schedule.lrs] for group in range(groups)]
    momentum_columns = (
        [[_number(row[group]) for row in schedule.momenta] for group in range(groups)]
        if schedule.momenta is not None
        else []
    )
    metric_columns: dict[str, list[float]] = {}
    if monitor is not None and metrics:
        column = [math.nan] + [_number(value) for value in metrics]
        column = (column + [math.nan] * len(steps))[: len(steps)]
        metric_columns[monitor] = column
    kept = keep_extremes(steps, [*lr_columns, *momentum_columns, *metric_columns.values()])
    return Chart(
        title=f"preview · {scheduler_type}",
        lr=[_series(steps, column, kept) for column in lr_columns],
        momentum=[_series(steps, column, kept) for column in momentum_columns]
        if schedule.momenta is not None
        else None,
        metrics={
            name: _without_gaps(_series(steps, column, kept))
            for name, column in metric_columns.items()
        },
        events=[ChartEvent(step, kind) for step, kind in schedule.events[:MAX_EVENTS_DRAWN]],
    )


# -- thinning ---------------------------------------------------------------------------
# A preview's values are computed, not stored: they are thinned here, by the same idea as
# history's (service.runs.thinning), which a run's chart reads already thinned.


def keep_extremes(
    steps: Sequence[int], columns: Sequence[Sequence[float]], max_points: int = MAX_POINTS_DRAWN
) -> list[int]:
    """The indices to draw: all of them when they fit, else per bucket of consecutive rows
    its first and last row and, for every column, the row of its lowest and highest value.

    Never every N-th row: a one-step spike or a plateau's drop stays in the picture, and
    the first row of each bucket keeps a steps-post line's corners where they were.
    """
    count = len(steps)
    if count <= max_points:
        return list(range(count))
    per_bucket = 2 + 2 * len(columns)
    buckets = max(1, max_points // per_bucket)
    size = math.ceil(count / buckets)
    kept: set[int] = set()
    for begin in range(0, count, size):
        end = min(begin + size, count)
        kept.update((begin, end - 1))
        for column in columns:
            finite = [index for index in range(begin, end) if math.isfinite(column[index])]
            if finite:
                kept.add(min(finite, key=column.__getitem__))
                kept.add(max(finite, key=column.__getitem__))
    return sorted(kept)


def _series(steps: Sequence[int], column: Sequence[float], kept: Sequence[int]) -> Series:
    return Series(steps=[steps[index] for index in kept], values=[column[index] for index in kept])


def _without_gaps(series: Series) -> Series:
    """A metric's points where it was reported (one line through them, not dashes)."""
    pairs = [(s, v) for s, v in zip(series.steps, series.values, strict=True) if not math.isnan(v)]
    return Series(steps=[s for s, _ in pairs], values=[v for _, v in pairs])


def _number(value: Any) -> float:
    """A stored value as a float to draw; non-finite ones (``"Infinity"``) and those beyond
    ±MAX_DRAWN_MAGNITUDE as NaN: a gap. matplotlib cannot lay out an axis whose range
    overflows a float (-1e308 to 1e308 fails in its tick maths)."""
    decoded = decode_floats(value)
    try:
        number = float(decoded)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return number if abs(number) <= MAX_DRAWN_MAGNITUDE else math.nan
