"""Prometheus counters for one app, and the recorder service.edge feeds them through.

Each app gets its own registry (built in create_app, never at import) so two
apps in one process — tests do that — count separately. With ``--workers N``
each worker process counts its own requests; scrape per process or sum.
"""

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

METRICS_MEDIA_TYPE = CONTENT_TYPE_PLAIN_0_0_4
STEP_ROUTE = "/v1/runs/{run_id}/steps"
# Unmatched paths share one label so a scanner cannot blow up the series count.
UNMATCHED_ROUTE = "unmatched"


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    step_reports: Counter

    def render(self) -> bytes:
        return generate_latest(self.registry)


def create_metrics() -> Metrics:
    # The *_created series double the output and no dashboard of ours reads them.
    # (A process-wide switch; setting it again is harmless.)
    disable_created_metrics()
    registry = CollectorRegistry()
    return Metrics(
        registry=registry,
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
    )


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
