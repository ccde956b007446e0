"""Liveness, readiness and metrics: the endpoints an orchestrator polls, without a token."""

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError

from service.db import schema_is_current
from service.metrics import METRICS_MEDIA_TYPE, Metrics
from service.problems import DatabaseUnavailable, ServiceUnavailable
from service.routes.dependencies import DatabaseDependency

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
def metrics(request: Request) -> Response:
    """Prometheus text format 0.0.4."""
    app_metrics: Metrics = request.app.state.metrics
    return Response(app_metrics.render(), media_type=METRICS_MEDIA_TYPE)
