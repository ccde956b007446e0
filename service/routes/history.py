"""/v1/runs/{run_id}/history and /events: what a run did, page by page, as JSON or CSV."""

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from service.problems import PROBLEM_MEDIA_TYPE
from service.routes.dependencies import DatabaseDependency, SettingsDependency
from service.routes.runs import RunId
from service.runs import history as run_history
from service.schemas import MAX_STEP, EventPage, HistoryPage, QueryBoolean, QueryInteger

router = APIRouter(prefix="/v1", tags=["history"])

CSV_MEDIA_TYPE = "text/csv"
# Where a CSV page says how to fetch the next one (JSON says it in ``next_cursor``).
NEXT_CURSOR_HEADER = "X-Next-Cursor"

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such run", "content": {PROBLEM_MEDIA_TYPE: {}}},
    422: {"description": "A query value out of range", "content": {PROBLEM_MEDIA_TYPE: {}}},
}


def wants_csv(request: Request, format_: str | None) -> bool:
    """``?format=csv`` (a link a browser can follow), or ``Accept: text/csv``."""
    if format_ is not None:
        return format_ == "csv"
    return CSV_MEDIA_TYPE in request.headers.get("accept", "")


@router.get(
    "/runs/{run_id}/history",
    responses={
        200: {
            "model": HistoryPage,
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
            "description": "JSON, or CSV with `Accept: text/csv` (next page: X-Next-Cursor)",
        },
        **_PROBLEMS,
    },
)
def get_history(
    run_id: RunId,
    request: Request,
    database: DatabaseDependency,
    settings: SettingsDependency,
    start: Annotated[
        QueryInteger | None, Query(ge=0, le=MAX_STEP, description="first step (inclusive)")
    ] = None,
    end: Annotated[
        QueryInteger | None, Query(ge=0, le=MAX_STEP, description="last step (inclusive)")
    ] = None,
    limit: Annotated[QueryInteger | None, Query(description="1 to 10000; default 1000")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    every: Annotated[QueryInteger, Query(ge=1, le=MAX_STEP, description="keep multiples of N")] = 1,
    include_superseded: Annotated[
        QueryBoolean, Query(description="add the rows a rewind superseded")
    ] = False,
    format_: Annotated[Literal["json", "csv"] | None, Query(alias="format")] = None,
) -> Response:
    """The run's steps in order, step 0 included; follow ``next_cursor`` until it is null."""
    page = run_history.history(
        database,
        run_id,
        run_history.HistoryQuery(
            start=start,
            end=end,
            limit=limit,
            cursor=cursor,
            every=every,
            include_superseded=include_superseded,
        ),
        max_limit=settings.max_history_limit,
    )
    if not wants_csv(request, format_):
        return JSONResponse(page.as_dict())
    headers = {NEXT_CURSOR_HEADER: page.next_cursor} if page.next_cursor else {}
    return Response(
        history_csv(page), media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8", headers=headers
    )


def history_csv(page: run_history.HistoryPage) -> str:
    """API.md's columns: step, lr_i, momentum_i (when cycled), one per metric, worker, ...

    The metric columns are the names the page's rows carry, sorted.
    """
    metric_names = sorted({name for item in page.items for name in item["metrics"]})
    lr_columns = [f"lr_{group}" for group in range(page.group_count)]
    momentum_columns = (
        [f"momentum_{group}" for group in range(page.group_count)] if page.cycles_momentum else []
    )
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(
        [
            "step",
            *lr_columns,
            *momentum_columns,
            *metric_names,
            "worker",
            "recorded_at",
            "superseded",
        ]
    )
    for item in page.items:
        momentum = item.get("momentum") or [""] * len(momentum_columns)
        writer.writerow(
            [
                item["step"],
                *item["lr"],
                *(momentum if momentum_columns else []),
                *(item["metrics"].get(name, "") for name in metric_names),
                item["worker"] or "",
                item["recorded_at"],
                "true" if item["superseded"] else "false",
            ]
        )
    return output.getvalue()


@router.get(
    "/runs/{run_id}/events",
    responses={200: {"model": EventPage}, **_PROBLEMS},
)
def get_events(
    run_id: RunId,
    database: DatabaseDependency,
    settings: SettingsDependency,
    limit: Annotated[QueryInteger | None, Query(description="1 to 10000; default 1000")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JSONResponse:
    """Plateau reductions, warm restarts, lr edits, rewinds, range-test stops, in order."""
    page = run_history.list_events(
        database, run_id, limit=limit, cursor=cursor, max_limit=settings.max_history_limit
    )
    return JSONResponse(page.as_dict())
