"""Liveness, readiness and metrics: the endpoints an orchestrator polls, without a token."""

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError

from service.db import schema_is_current
from service.metrics import METRICS_MEDIA_TYPE, Metrics, stale_runs_exposition
from service.problems import DatabaseUnavailable, ServiceUnavailable
from service.routes.dependencies import DatabaseDependency, SettingsDependency
from service.runs import catalog

router = APIRouter(tags=["health"])
logger = logging.getLogger("lrkeeper.health")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive and answering; says nothing about the database."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database unreachable or not migrated"}})
def readyz(database: DatabaseDependency) -> dict[str, str]:
    """Ready for traffic: the database answers and its schema is the newest migration."""
    try:
        current = schema_is_current(database.read_engine)
    except SQLAlchemyError:
        logger.warning("readiness check could not reach the database", exc_info=True)
        raise DatabaseUnavailable("the database is unreachable") from None
    if not current:
        raise ServiceUnavailable(
            "the database schema is not at the latest migration; run `lrkeeper db upgrade`"
        )
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
def metrics(
    request: Request, database: DatabaseDependency, settings: SettingsDependency
) -> Response:
    """Prometheus text format 0.0.4; without the stale-runs gauge while the database is away."""
    app_metrics: Metrics = request.app.state.metrics
    exposition = app_metrics.render()
    try:
        stale = catalog.count_stale_runs(database, stale_after=settings.stale_after)
    except DatabaseUnavailable:
        app_metrics.database_errors.labels("unavailable").inc()
    else:
        exposition += stale_runs_exposition(stale)
    return Response(exposition, media_type=METRICS_MEDIA_TYPE)
