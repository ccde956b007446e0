"""Chart images: a run's history or a preview's schedule, as SVG or PNG (matplotlib).

The routes gather the numbers (service.charts.data) and hand them to the drawing
(service.charts.draw), which is imported on the first chart, not with the service.
Plain ``def`` routes: reading and drawing both block, so they run in the thread pool.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from service.charts import data
from service.json_body import JsonBodyRoute
from service.problems import PROBLEM_MEDIA_TYPE
from service.routes.dependencies import DatabaseDependency, SettingsDependency
from service.routes.runs import Method, RunId
from service.runs import history as run_history
from service.runs.preview import preview_schedule
from service.schedules.codec import decode_floats
from service.schemas import MAX_STEP, PreviewRequest, QueryInteger, SuggestionMethod

router = APIRouter(prefix="/v1", route_class=JsonBodyRoute)

SVG_MEDIA_TYPE = "image/svg+xml"
PNG_MEDIA_TYPE = "image/png"
# A run's chart changes with its next step: a cache may keep it, but must ask first. A
# preview's is a function of its body alone.
RUN_CHART_CACHE_CONTROL = "private, no-cache"
PREVIEW_CHART_CACHE_CONTROL = "private, max-age=3600"

_SVG_ANSWER = {
    200: {
        "description": "The chart as an SVG document",
        "content": {SVG_MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}
_PNG_ANSWER = {
    200: {
        "description": "The chart as a PNG image",
        "content": {PNG_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}
_RUN_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such run", "content": {PROBLEM_MEDIA_TYPE: {}}},
    422: {
        "description": "scale, start, end or metrics refused (named in `errors`)",
        "content": {PROBLEM_MEDIA_TYPE: {}},
    },
}
_SUGGESTION_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such run", "content": {PROBLEM_MEDIA_TYPE: {}}},
    409: {"description": "Fewer than 10 usable steps so far", "content": {PROBLEM_MEDIA_TYPE: {}}},
    422: {
        "description": "The run is not an LRRangeTest, or `method` is unknown",
        "content": {PROBLEM_MEDIA_TYPE: {}},
    },
}
_PREVIEW_PROBLEMS: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Invalid config, too many steps, or a step that fails (named)",
        "content": {PROBLEM_MEDIA_TYPE: {}},
    },
}

Scale = Annotated[data.Scale, Query(description="the lr axis: linear (default) or log")]
Start = Annotated[
    QueryInteger | None, Query(ge=0, le=MAX_STEP, description="first step shown (inclusive)")
]
End = Annotated[
    QueryInteger | None, Query(ge=0, le=MAX_STEP, description="last step shown (inclusive)")
]
Metrics = Annotated[
    str | None,
    Query(
        max_length=1000,
        description=(
            "reported metrics to draw on the second axis besides the monitored one, "
            f"comma-separated (at most {data.MAX_METRICS_DRAWN})"
        ),
    ),
]


def _run_chart_image(
    image_format: str,
    run_id: str,
    database: DatabaseDependency,
    settings: SettingsDependency,
    scale: data.Scale,
    start: int | None,
    end: int | None,
    metrics: str | None,
) -> bytes:
    query = data.ChartQuery(start=start, end=end, metrics=data.parse_metric_names(metrics))
    chart = data.run_chart(
        database,
        run_id,
        query,
        stale_after=settings.stale_after,
        max_history_limit=settings.max_history_limit,
    )
    from service.charts import draw

    return draw.render(chart, "svg" if image_format == "svg" else "png", scale)


def _preview_chart_image(
    image_format: str, body: PreviewRequest, settings: SettingsDependency
) -> bytes:
    schedule = preview_schedule(
        body,
        max_preview_steps=settings.max_preview_steps,
        max_preview_values=settings.max_preview_values,
        max_param_groups=settings.max_param_groups,
    )
    monitors = data.monitored_metrics(schedule.config)
    chart = data.preview_chart(
        schedule,
        str(schedule.config["type"]),
        monitors[0] if monitors else None,
        body.metrics or [],
    )
    from service.charts import draw

    return draw.render(chart, "svg" if image_format == "svg" else "png", "linear")


@router.get(
    "/runs/{run_id}/chart.svg",
    response_class=Response,
    responses={**_SVG_ANSWER, **_RUN_PROBLEMS},
    tags=["history"],
)
def run_chart_svg(
    run_id: RunId,
    database: DatabaseDependency,
    settings: SettingsDependency,
    scale: Scale = "linear",
    start: Start = None,
    end: End = None,
    metrics: Metrics = None,
) -> Response:
    """The run's lr per param group over the steps (steps-post: a reduction is a drop), its
    metrics on a second axis, momentum when it cycles, events marked, superseded history
    faded; long runs thinned keeping each stretch's lowest and highest values."""
    image = _run_chart_image("svg", run_id, database, settings, scale, start, end, metrics)
    return Response(
        image, media_type=SVG_MEDIA_TYPE, headers={"Cache-Control": RUN_CHART_CACHE_CONTROL}
    )


@router.get(
    "/runs/{run_id}/chart.png",
    response_class=Response,
    responses={**_PNG_ANSWER, **_RUN_PROBLEMS},
    tags=["history"],
)
def run_chart_png(
    run_id: RunId,
    database: DatabaseDependency,
    settings: SettingsDependency,
    scale: Scale = "linear",
    start: Start = None,
    end: End = None,
    metrics: Metrics = None,
) -> Response:
    """The chart of ``chart.svg`` as a PNG image."""
    image = _run_chart_image("png", run_id, database, settings, scale, start, end, metrics)
    return Response(
        image, media_type=PNG_MEDIA_TYPE, headers={"Cache-Control": RUN_CHART_CACHE_CONTROL}
    )


def _suggestion_chart_image(
    image_format: str, run_id: str, database: DatabaseDependency, method: SuggestionMethod
) -> bytes:
    suggestion = decode_floats(run_history.lr_suggestion(database, run_id, method))
    from service.charts import suggestion as suggestion_chart

    return suggestion_chart.render(run_id, suggestion, "svg" if image_format == "svg" else "png")


@router.get(
    "/runs/{run_id}/lr-suggestion/chart.svg",
    response_class=Response,
    responses={**_SVG_ANSWER, **_SUGGESTION_PROBLEMS},
    tags=["runs"],
)
def lr_suggestion_chart_svg(
    run_id: RunId, database: DatabaseDependency, method: Method = "steepest"
) -> Response:
    """An LRRangeTest run's smoothed loss against lr (log axis), every method's suggestion
    marked by a vertical line, ``method``'s solid: ``GET /lr-suggestion`` drawn."""
    image = _suggestion_chart_image("svg", run_id, database, method)
    return Response(
        image, media_type=SVG_MEDIA_TYPE, headers={"Cache-Control": RUN_CHART_CACHE_CONTROL}
    )


@router.get(
    "/runs/{run_id}/lr-suggestion/chart.png",
    response_class=Response,
    responses={**_PNG_ANSWER, **_SUGGESTION_PROBLEMS},
    tags=["runs"],
)
def lr_suggestion_chart_png(
    run_id: RunId, database: DatabaseDependency, method: Method = "steepest"
) -> Response:
    """The chart of ``lr-suggestion/chart.svg`` as a PNG image."""
    image = _suggestion_chart_image("png", run_id, database, method)
    return Response(
        image, media_type=PNG_MEDIA_TYPE, headers={"Cache-Control": RUN_CHART_CACHE_CONTROL}
    )


@router.post(
    "/preview/chart.svg",
    response_class=Response,
    responses={**_SVG_ANSWER, **_PREVIEW_PROBLEMS},
    tags=["schedulers"],
)
def preview_chart_svg(body: PreviewRequest, settings: SettingsDependency) -> Response:
    """``POST /v1/preview``'s schedule drawn: lr per group, momentum when it cycles, the
    given metrics under the monitored name, the schedule's own events marked."""
    image = _preview_chart_image("svg", body, settings)
    return Response(
        image, media_type=SVG_MEDIA_TYPE, headers={"Cache-Control": PREVIEW_CHART_CACHE_CONTROL}
    )


@router.post(
    "/preview/chart.png",
    response_class=Response,
    responses={**_PNG_ANSWER, **_PREVIEW_PROBLEMS},
    tags=["schedulers"],
)
def preview_chart_png(body: PreviewRequest, settings: SettingsDependency) -> Response:
    """The chart of ``/v1/preview/chart.svg`` as a PNG image."""
    image = _preview_chart_image("png", body, settings)
    return Response(
        image, media_type=PNG_MEDIA_TYPE, headers={"Cache-Control": PREVIEW_CHART_CACHE_CONTROL}
    )
