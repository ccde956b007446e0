"""/v1/runs: create, read, list and patch runs; the hot path (steps, lr); lr edits and rewinds.

HTTP in, answers out, no SQL: every route is one call into ``service.runs``.
Answers are the dicts the use cases build, sent as JSON as they are (the
response models only document them), so the hot path never pays for a second
validation pass. Plain ``def`` routes: the work is a blocking database round
trip, which FastAPI runs in its thread pool. The hot path's two routes are
``async``: on PostgreSQL their use cases await asyncpg on the event loop, and on
SQLite hand the blocking work to the same thread pool themselves.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from service.json_body import JsonBodyRoute
from service.problems import PROBLEM_MEDIA_TYPE
from service.routes.dependencies import DatabaseDependency, SettingsDependency
from service.runs import catalog, changes, steps
from service.runs import history as run_history
from service.schemas import (
    MAX_STEP,
    RUN_ID_PATTERN,
    RUN_ID_PREFIX_PATTERN,
    LrAnswer,
    LrChange,
    LrSuggestion,
    QueryInteger,
    Rewind,
    Run,
    RunCreate,
    RunPage,
    RunPatch,
    RunStatus,
    StepAnswer,
    StepPending,
    StepReport,
    SuggestionMethod,
)

router = APIRouter(prefix="/v1", tags=["runs"], route_class=JsonBodyRoute)

RunId = Annotated[
    str,
    Path(
        pattern=RUN_ID_PATTERN,
        max_length=128,
        description="1–128 characters of A-Za-z0-9._-, chosen by the client",
    ),
]


def _problem(status_code: int, description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {}}}


Method = Annotated[
    SuggestionMethod,
    Query(
        description=(
            "how `lr` is read off the curve: steepest (fastest fall), minimum (the lowest "
            "loss's lr / 10) or valley (fastai's default)"
        )
    ),
]

NOT_FOUND = {404: _problem(404, "No such run")}

Wait = Annotated[
    float,
    Query(
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description=(
            "Seconds to wait for a ranked step's decision before answering 202 "
            "(cut to the service's LRKEEPER_MAX_WAIT_SECONDS, 60 by default)"
        ),
    ),
]
PENDING = {
    202: {
        "model": StepPending,
        "description": "A ranked run's step still waits for some ranks' metrics",
    }
}
INVALID = {422: _problem(422, "Invalid request; `errors` names the field")}


@router.put(
    "/runs/{run_id}",
    status_code=201,
    responses={
        200: {"model": Run, "description": "The run exists with the same schedule"},
        201: {"model": Run, "description": "Created"},
        409: _problem(409, "The run exists with another schedule; `differences` says where"),
        **INVALID,
    },
)
def put_run(
    run_id: RunId, body: RunCreate, database: DatabaseDependency, settings: SettingsDependency
) -> JSONResponse:
    """Create a run (idempotent: every rank of a job may PUT the same run)."""
    created, run = catalog.create_run(
        database,
        run_id,
        body,
        max_param_groups=settings.max_param_groups,
        stale_after=settings.stale_after,
    )
    return JSONResponse(
        run,
        status_code=201 if created else 200,
        headers={"Location": f"/v1/runs/{run_id}"},
    )


@router.get(
    "/runs/{run_id}",
    responses={200: {"model": Run}, **NOT_FOUND, **INVALID},
)
def get_run(
    run_id: RunId, database: DatabaseDependency, settings: SettingsDependency
) -> JSONResponse:
    return JSONResponse(catalog.get_run(database, run_id, stale_after=settings.stale_after))


@router.get(
    "/runs",
    responses={200: {"model": RunPage}, **INVALID},
)
def list_runs(
    database: DatabaseDependency,
    settings: SettingsDependency,
    status: RunStatus | None = None,
    prefix: Annotated[str | None, Query(max_length=128, pattern=RUN_ID_PREFIX_PATTERN)] = None,
    limit: Annotated[
        QueryInteger | None, Query(description="1 to 1000 (LRKEEPER_MAX_LIST_LIMIT); default 100")
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JSONResponse:
    """Runs in creation order; follow ``next_cursor`` until it is null."""
    page = catalog.list_runs(
        database,
        status=status,
        prefix=prefix,
        limit=limit,
        cursor=cursor,
        max_limit=settings.max_list_limit,
        stale_after=settings.stale_after,
    )
    return JSONResponse(page.as_dict())


@router.patch(
    "/runs/{run_id}",
    responses={200: {"model": Run}, **NOT_FOUND, **INVALID},
)
def update_run(
    run_id: RunId, body: RunPatch, database: DatabaseDependency, settings: SettingsDependency
) -> JSONResponse:
    """Change the status and/or replace the metadata; the schedule never changes here.

    ``{"status": "running"}`` reopens a finished or failed run (event ``reopened``).
    """
    return JSONResponse(
        catalog.update_run(database, run_id, body, stale_after=settings.stale_after)
    )


@router.post(
    "/runs/{run_id}/steps",
    responses={
        200: {"model": StepAnswer},
        **PENDING,
        **NOT_FOUND,
        409: _problem(
            409,
            "Step out of order (`expected_step`), past the schedule's end, a schedule that "
            "failed at this step (`schedule-failed`), a run that is not running "
            "(`run-not-running`), or a rank repeating its report with other metrics "
            "(`rank-metric-conflict`)",
        ),
        **INVALID,
    },
)
async def report_step(
    run_id: RunId, body: StepReport, request: Request, wait: Wait = 0.0
) -> JSONResponse:
    """Report that a worker finished ``step``; answers the lr to use from now on.

    The first report of a step advances the schedule; every later one (other
    ranks, retries) replays what was recorded, with ``replayed: true``. On a run with
    ``ranks`` and a metric-driven schedule, a new step waits for every rank's report:
    202 until then, or until ``timeout_s`` has passed since its first report.
    """
    # The hot path reads the app's state directly: two fewer dependencies to resolve.
    state = request.app.state
    waiters = state.step_waiters

    async def report() -> dict[str, Any]:
        return await steps.report_step(
            state.database,
            run_id,
            body,
            catch_up=state.settings.catch_up_limit(),
            recorded_steps=state.recorded_steps,
            waiters=waiters,
        )

    answer = await report()
    if answer.get("pending") and wait > 0:
        wait = min(wait, state.settings.max_wait_seconds)
        await steps.wait_for_decision(state.database, run_id, body.step, wait, waiters)
        answer = await report()  # a replay of this report: the decision, or pending still
    state.metrics.count_step_answer(answer)
    return JSONResponse(answer, status_code=202 if answer.get("pending") else 200)


@router.get(
    "/runs/{run_id}/lr",
    responses={200: {"model": LrAnswer}, **PENDING, **NOT_FOUND, **INVALID},
)
async def get_lr(
    run_id: RunId,
    request: Request,
    step: Annotated[QueryInteger | None, Query(ge=0, le=MAX_STEP)] = None,
    wait: Wait = 0.0,
) -> JSONResponse:
    """The current lr (a POST /lr shows here at once), or as recorded at ``step``.

    With ``step`` = a ranked run's next step, waits up to ``wait`` seconds for its
    decision (202 if it is still pending); past the step's ``timeout_s`` the ranks
    present decide it.
    """
    state = request.app.state
    answer = await steps.current_lr(
        state.database,
        run_id,
        step,
        wait=min(wait, state.settings.max_wait_seconds),
        waiters=state.step_waiters,
    )
    return JSONResponse(answer, status_code=202 if answer.get("pending") else 200)


@router.post(
    "/runs/{run_id}/lr",
    responses={200: {"model": Run}, **NOT_FOUND, **INVALID},
)
def set_lr(
    run_id: RunId, body: LrChange, database: DatabaseDependency, settings: SettingsDependency
) -> JSONResponse:
    """Set the current lr by hand; later steps continue from it exactly as torch's would."""
    return JSONResponse(changes.set_lr(database, run_id, body, stale_after=settings.stale_after))


@router.post(
    "/runs/{run_id}/rewind",
    responses={200: {"model": Run}, **NOT_FOUND, **INVALID},
)
def rewind_run(
    run_id: RunId, body: Rewind, database: DatabaseDependency, settings: SettingsDependency
) -> JSONResponse:
    """Back to the state after step K; the later history stays, marked superseded."""
    return JSONResponse(
        changes.rewind(database, run_id, body.step, stale_after=settings.stale_after)
    )


@router.get(
    "/runs/{run_id}/lr-suggestion",
    responses={
        200: {"model": LrSuggestion},
        **NOT_FOUND,
        409: _problem(409, "Fewer than 10 usable steps so far"),
        422: _problem(422, "The run is not an LRRangeTest, or `method` is unknown"),
    },
)
def get_lr_suggestion(
    run_id: RunId, database: DatabaseDependency, method: Method = "steepest"
) -> JSONResponse:
    """An LRRangeTest run's suggested lr by ``method``, every method's suggestion, Smith's
    CyclicLR bounds and the smoothed loss curve they are read from."""
    return JSONResponse(run_history.lr_suggestion(database, run_id, method))
