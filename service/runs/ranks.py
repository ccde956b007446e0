"""One decision from every rank's metric: the waiting state of a ranked run's step.

A run created with ``ranks`` (``{"world_size", "reduce", "timeout_s"}``) and a
metric-driven schedule decides each step once: when the last of its ``world_size``
ranks has reported its metrics for it, or, past ``timeout_s`` after the step's first
report, with the ranks present. Until then each report is kept as a row of
``rank_reports`` and answered 202 (pending). The rows are the whole waiting state, in
the database, so a replica that never saw a rank's report decides as well as the one
that did; nothing about a pending step lives in a process.

The reduction is exact and does not depend on arrival order: ``sum`` and ``mean`` are
the exact sum and mean of the ranks' values (in rationals) rounded once to a float, so
the ranks that all send one all-reduced value get that value back; ``min`` and ``max``
as usual. A NaN from any rank makes the reduced
value NaN (torch's plateau rule never counts NaN as an improvement, so one sick rank
cannot pass for progress), and a sum or mean holding both infinities is NaN too.
Every metric name is reduced over the ranks that reported it.

The generator here runs inside the step report's write transaction (the run's row is
locked), so counting the rows and deciding cannot race another rank's report.
"""

import json
import math
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from service.problems import RankMetricConflict
from service.runs.answers import invalid
from service.runs.statements import Execute, Fetch, FetchRows, HotStatement
from service.schedules.codec import decode_floats, encode_floats

RANK_REPORT = HotStatement.of(
    "SELECT metrics FROM rank_reports WHERE run_pk = :run_pk AND step = :step AND rank = :rank"
)

RANK_REPORTS_OF_STEP = HotStatement.of(
    """
SELECT rank, metrics, reported_at FROM rank_reports
WHERE run_pk = :run_pk AND step = :step ORDER BY rank"""
)

INSERT_RANK_REPORT = HotStatement.of(
    """
INSERT INTO rank_reports (run_pk, step, rank, metrics, worker, reported_at)
VALUES (:run_pk, :step, :rank, :metrics, :worker, :now)"""
)

RANKS_TIMED_OUT = "ranks_timed_out"


@dataclass(frozen=True)
class Ranks:
    world_size: int
    reduce: str
    timeout_s: float

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> "Ranks | None":
        if stored is None:
            return None
        return cls(int(stored["world_size"]), str(stored["reduce"]), float(stored["timeout_s"]))


@dataclass(frozen=True)
class Pending:
    """Not every rank has reported ``step`` yet, and its timeout has not passed."""

    step: int
    reported: int
    world_size: int

    def answer(self) -> dict[str, Any]:
        return {
            "pending": True,
            "step": self.step,
            "reported": self.reported,
            "world_size": self.world_size,
        }


@dataclass(frozen=True)
class Decision:
    """The reduced metrics the schedule reads for the step, and the event of a timeout."""

    metrics: dict[str, float]
    events: list[dict[str, Any]]


def metrics_text(metrics: Mapping[str, float]) -> str:
    """A rank's metrics as stored: codec-encoded, keys sorted, so sameness is ``==``."""
    return json.dumps(encode_floats(dict(metrics)), sort_keys=True, separators=(",", ":"))


def check_rank(ranks: Ranks | None, rank: int | None) -> None:
    """A rank only on a run with ranks, and below its world size (422 naming ``rank``)."""
    if rank is None:
        return
    if ranks is None:
        raise invalid(["body", "rank"], "this run was created without `ranks`; send no rank")
    if rank >= ranks.world_size:
        raise invalid(
            ["body", "rank"],
            f"must be below the run's world_size {ranks.world_size}, got {rank}",
        )


def check_repeated_report(
    stored_text: str | None, metrics: Mapping[str, float], rank: int, step: int
) -> None:
    """A rank repeating its report is a replay; the same rank with other metrics is a 409."""
    if stored_text is not None and stored_text != metrics_text(metrics):
        raise RankMetricConflict(
            f"rank {rank} reported step {step} with other metrics: {stored_text}",
            rank=rank,
            step=step,
            stored=json.loads(stored_text),
        )


def reduce_metrics(reports: Iterable[Mapping[str, float]], how: str) -> dict[str, float]:
    """Each metric name over the ranks that reported it, in rank order (the result does not
    depend on the order: see the module's docstring)."""
    values_by_name: dict[str, list[float]] = {}
    for metrics in reports:
        for name, value in metrics.items():
            values_by_name.setdefault(name, []).append(float(value))
    return {name: _reduce(values, how) for name, values in values_by_name.items()}


def _reduce(values: list[float], how: str) -> float:
    if any(math.isnan(value) for value in values):
        return math.nan
    if how == "min":
        return min(values)
    if how == "max":
        return max(values)
    if all(math.isfinite(value) for value in values):
        # Exact in rationals, rounded once: fsum(values) / n rounds twice, which puts the
        # mean of three equal values 1 ulp off it for about one value in seven.
        exact = sum(map(Fraction, values), Fraction(0))
        return float(exact if how == "sum" else exact / len(values))
    try:
        return math.fsum(values)  # an infinity (both: ValueError), which n does not change
    except ValueError:
        return math.nan


def collect(
    run_pk: int,
    ranks: Ranks,
    step: int,
    now: datetime,
    *,
    report: tuple[int, Mapping[str, float], str | None, Any] | None,
) -> Generator[Any, Any, Pending | Decision | None]:
    """Keep ``report`` (rank, metrics, worker, its timestamp as stored) if given, then
    decide ``step`` if every rank is in or its timeout has passed.

    Without a report (a reader found the timeout passed) there is nothing to decide on
    until some rank has reported: None.
    """
    if report is not None:
        rank, metrics, worker, stored_now = report
        key = {"run_pk": run_pk, "step": step, "rank": rank}
        mine = yield Fetch(RANK_REPORT, key)
        if mine is None:
            row = {**key, "metrics": metrics_text(metrics), "worker": worker, "now": stored_now}
            yield Execute(INSERT_RANK_REPORT, row)
        else:
            check_repeated_report(mine["metrics"], metrics, rank, step)
    rows = yield FetchRows(RANK_REPORTS_OF_STEP, {"run_pk": run_pk, "step": step})
    if not rows:
        return None
    present = [row["rank"] for row in rows]
    first_reported = min(as_utc(row["reported_at"]) for row in rows)
    waited = (now - first_reported).total_seconds()
    if len(rows) < ranks.world_size and waited < ranks.timeout_s:
        return Pending(step, len(rows), ranks.world_size)
    reduced = reduce_metrics(
        (decode_floats(json.loads(row["metrics"])) for row in rows), ranks.reduce
    )
    events: list[dict[str, Any]] = []
    if len(rows) < ranks.world_size:
        missing = missing_ranks(ranks.world_size, present)
        detail = {
            "missing": missing,
            "reported": len(rows),
            "world_size": ranks.world_size,
            "timeout_s": ranks.timeout_s,
        }
        events.append({"kind": RANKS_TIMED_OUT, "detail": detail})
    return Decision(reduced, events)


def missing_ranks(world_size: int, present: Iterable[int]) -> list[int]:
    """The ranks below ``world_size`` that have not reported, in order."""
    return sorted(set(range(world_size)) - set(present))


def as_utc(value: datetime | str) -> datetime:
    """A stored timestamp as both drivers return it: asyncpg's aware datetime, or SQLite's
    naive UTC text (service.runs.statements.sqlite_timestamp)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
