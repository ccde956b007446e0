"""The app factory: ``create_app(settings)`` builds a fresh service; importing builds nothing.

uvicorn calls it as a factory (``service.main:create_app``), so every worker
process reads its settings from the environment; tests pass their own.
"""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from anyio import to_thread
from fastapi import FastAPI

from service.access import install_access_control
from service.config import Settings
from service.db import open_database, with_hot_path_pool
from service.edge import EdgeMiddleware
from service.metrics import create_metrics
from service.openapi import install_openapi
from service.problems import install_problem_handlers
from service.routes import (
    assets,
    charts,
    docs,
    health,
    history,
    login,
    pages,
    runs,
    schedulers,
)
from service.routing import answer_head_where_get
from service.runs.steps import RecordedSteps
from service.runs.waiting import StepWaiters


def _package_version() -> str:
    try:
        return version("lrkeeper")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Opening engines does not connect yet: the service starts even while the
        # database is down, and /readyz says so until it answers.
        database = open_database(settings.database_url, pool_size=settings.db_pool_size)
        database = await with_hot_path_pool(database, pool_size=settings.db_pool_size)
        app.state.database = database
        # Plain ``def`` routes run in anyio's thread pool (40 threads by default). With
        # no more threads than pooled connections, a request never waits inside a
        # thread for a connection, and fewer threads contend for the GIL; the rest
        # wait their turn on the event loop, which costs nothing.
        to_thread.current_default_thread_limiter().total_tokens = settings.db_pool_size
        # What exists by now (modules, the app, its routes and schemas: ~120k objects)
        # lives as long as the process. Frozen, the collector's full passes skip it;
        # unfrozen, each pass measured 70-80 ms, several a minute under load, which
        # set the p99 of every endpoint.
        gc.freeze()
        try:
            yield
        finally:
            await database.close()

    app = FastAPI(
        title="lrkeeper",
        version=_package_version(),
        summary="torch's learning-rate schedulers, kept in a database, served over HTTP.",
        lifespan=lifespan,
        # service.routes.docs serves both pages with their scripts (FastAPI's load a CDN's).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = create_metrics()
    app.state.recorded_steps = RecordedSteps()
    app.state.step_waiters = StepWaiters()
    install_problem_handlers(app)
    # Bearer tokens / protected mode (service.access); a malformed LRKEEPER_TOKENS stops here.
    # Added before EdgeMiddleware, so refusals are counted and carry a request id too.
    open_routes = (*health.router.routes, *login.router.routes, *docs.router.routes)
    open_paths = {*(route.path for route in open_routes), *assets.ASSET_PATHS}
    install_access_control(app, settings, open_paths=open_paths)
    # Request ids, body limits, metrics, the access log, and the 500 safety net (service.edge).
    app.add_middleware(
        EdgeMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        payload_limits=settings.payload_limits(),
        routes=app.router.routes,
    )
    # The routers' APIRoutes go straight onto the app's own router instead of through
    # include_router: since FastAPI 0.137 an included router stays a node that every
    # request is matched through twice, which measured 16 µs of the hot path's 95 µs of
    # framework time (bench/README.md). Each route already carries its router's prefix,
    # tags and dependencies; app.dependency_overrides would not reach these routes, and
    # nothing here uses it. The hot routes (service.routes.runs) are matched second.
    for routes in (health, runs, history, charts, schedulers, pages, login, docs, assets):
        app.router.routes.extend(routes.router.routes)
    answer_head_where_get(app.router.routes)
    install_openapi(app, settings)
    return app
