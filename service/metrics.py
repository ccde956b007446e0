"""Prometheus counters for one app, and the recorder service.edge feeds them through.

Each app gets its own registry (built in create_app, never at import) so two
apps in one process — tests do that — count separately.

With ``--workers N``, ``lrkeeper serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before
the workers start (prometheus-client picks its value store when it is imported,
so it must be set first): each worker then writes its counts to files there, and
``/metrics`` on any worker answers the sum over all of them, read by a
``MultiProcessCollector``. It reads the files alone, never the app's registry as
well, or this worker's counts would be added twice. A gauge added in this mode
needs a ``multiprocess_mode`` (e.g. ``"livesum"`` or ``"max"``) to say how the
workers' values combine.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

METRICS_MEDIA_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
STEP_ROUTE = "/v1/runs/{run_id}/steps"
# Unmatched paths share one label so a scanner cannot blow up the series count.
UNMATCHED_ROUTE = "unmatched"
PLATEAU_REDUCTION = "plateau_reduction"


@dataclass(frozen=True)
class Metrics:
    """One app's series. ``exposition`` is what /metrics renders: the registry, or every worker's.

    ``database_errors`` (label ``kind``) is for the use cases (service.runs) to
    count each database failure they meet, ``kind`` naming it (e.g.
    ``unavailable``, ``serialization``, ``deadlock``): a few fixed words, never an
    error message, or each new message would be a new series.
    """

    registry: CollectorRegistry
    exposition: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    step_reports: Counter
    step_replays: Counter
    plateau_reductions: Counter
    database_errors: Counter

    def render(self) -> bytes:
        return generate_latest(self.exposition)

    def count_step_answer(self, answer: Mapping[str, Any]) -> None:
        """Replays, and plateau reductions in answers that are not replays.

        A replay repeats the events its step answered the first time (every rank
        of a job gets them), so counting its events would count one reduction
        once per rank.
        """
        if answer.get("replayed"):
            self.step_replays.inc()
            return
        for event in answer.get("events") or ():
            if event["kind"] == PLATEAU_REDUCTION:
                self.plateau_reductions.inc()


def create_metrics() -> Metrics:
    # The *_created series double the output and no dashboard of ours reads them.
    # (A process-wide switch; setting it again is harmless.)
    disable_created_metrics()
    registry = CollectorRegistry()
    exposition = registry
    if MULTIPROCESS_DIRECTORY_VARIABLE in os.environ:
        exposition = CollectorRegistry()
        MultiProcessCollector(exposition)
    return Metrics(
        registry=registry,
        exposition=exposition,
        requests=Counter(
            "lrkeeper_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["method", "route", "status"],
            registry=registry,
        ),
        request_seconds=Histogram(
            "lrkeeper_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["method", "route"],
            registry=registry,
        ),
        step_reports=Counter(
            "lrkeeper_step_reports",
            "Step reports answered, by status (200 covers new steps and replays).",
            ["status"],
            registry=registry,
        ),
        step_replays=Counter(
            "lrkeeper_step_replays",
            "Step reports answered from the record (replayed: true): other ranks, retries.",
            registry=registry,
        ),
        plateau_reductions=Counter(
            "lrkeeper_plateau_reductions",
            "ReduceLROnPlateau reductions made by step reports (replays not counted again).",
            registry=registry,
        ),
        database_errors=Counter(
            "lrkeeper_database_errors",
            "Database failures met while answering, by kind.",
            ["kind"],
            registry=registry,
        ),
    )


def stale_runs_exposition(count: int) -> bytes:
    """The ``lrkeeper_stale_runs`` gauge, counted from the database at each scrape.

    Staleness is computed when read (no job marks runs), so the gauge is too: one
    COUNT per scrape, the same on every worker and replica, with no per-process state
    to combine in multiprocess mode.
    """

    class StaleRuns:
        def collect(self) -> list[GaugeMetricFamily]:
            return [
                GaugeMetricFamily(
                    "lrkeeper_stale_runs",
                    "Running runs with no new step for LRKEEPER_STALE_AFTER seconds.",
                    value=count,
                )
            ]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StaleRuns())
    return generate_latest(registry)


class AnswerRecorder:
    """Counts answers into one app's Metrics (service.edge calls it once per request).

    The labelled children are looked up once per (method, route, status) and kept:
    ``labels()`` takes a lock and builds a key on every call, which the hot path
    would otherwise pay on each request.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._recorders: dict[tuple[str, str, int], Callable[[float], None]] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answer that took ``seconds``."""
        key = (method, route, status)
        record = self._recorders.get(key)
        if record is None:
            record = self._recorders[key] = self._recorder(*key)
        record(seconds)

    def _recorder(self, method: str, route: str, status: int) -> Callable[[float], None]:
        """What answering ``method route`` with ``status`` counts, as one call."""
        answered = self.metrics.requests.labels(method, route, str(status))
        timed = self.metrics.request_seconds.labels(method, route)
        step_reported = (
            self.metrics.step_reports.labels(str(status))
            if route == STEP_ROUTE and method == "POST"
            else None
        )

        def record(seconds: float) -> None:
            answered.inc()
            timed.observe(seconds)
            if step_reported is not None:
                step_reported.inc()

        return record
