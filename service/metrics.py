"""Prometheus counters for one app, and the middleware that feeds them.

Each app gets its own registry (built in create_app, never at import) so two
apps in one process — tests do that — count separately. With ``--workers N``
each worker process counts its own requests; scrape per process or sum.
"""

import time
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class MetricsMiddleware:
    """Counts every HTTP answer under the route template that produced it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_seconds.labels(method, route).observe(
                time.perf_counter() - started
            )
            if route == STEP_ROUTE and method == "POST":
                self.metrics.step_reports.labels(str(status)).inc()
