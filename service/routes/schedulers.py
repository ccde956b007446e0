"""/v1/preview and /v1/scheduler-types: schedules without a run, nothing stored."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.json_body import JsonBodyRoute
from service.problems import PROBLEM_MEDIA_TYPE
from service.routes.runs import SettingsDependency
from service.runs import preview as engine_only
from service.schemas import PreviewAnswer, PreviewRequest, SchedulerTypes

router = APIRouter(prefix="/v1", tags=["schedulers"], route_class=JsonBodyRoute)


@router.post(
    "/preview",
    responses={
        200: {"model": PreviewAnswer},
        422: {
            "description": "Invalid config, or a step that fails (named in the message)",
            "content": {PROBLEM_MEDIA_TYPE: {}},
        },
    },
)
def preview(body: PreviewRequest, settings: SettingsDependency) -> JSONResponse:
    """The lrs (and momenta) a schedule would give at steps 0 to ``steps``."""
    answer = engine_only.preview(
        body,
        max_preview_steps=settings.max_preview_steps,
        max_preview_values=settings.max_preview_values,
        max_param_groups=settings.max_param_groups,
    )
    return JSONResponse(answer)


@router.get(
    "/scheduler-types",
    responses={200: {"model": SchedulerTypes}},
)
def list_scheduler_types() -> JSONResponse:
    """Every scheduler type with its parameters, their types and defaults."""
    return JSONResponse(engine_only.scheduler_types())
