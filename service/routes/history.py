"""/v1/runs/{run_id}/history and /events: what a run did, page by page, as JSON or CSV."""

import csv
import dataclasses
import io
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from service.config import Settings
from service.db import Database
from service.problems import PROBLEM_MEDIA_TYPE
from service.routes.dependencies import DatabaseDependency, SettingsDependency
from service.routes.runs import RunId
from service.runs import history as run_history
from service.runs import thinning
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


@dataclasses.dataclass
class HistoryParameters:
    """The query both history operations take (JSON and CSV)."""

    start: Annotated[
        QueryInteger | None, Query(ge=0, le=MAX_STEP, description="first step (inclusive)")
    ] = None
    end: Annotated[
        QueryInteger | None, Query(ge=0, le=MAX_STEP, description="last step (inclusive)")
    ] = None
    limit: Annotated[QueryInteger | None, Query(description="1 to 10000; default 1000")] = None
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None
    every: Annotated[QueryInteger, Query(ge=1, le=MAX_STEP, description="keep multiples of N")] = 1
    include_superseded: Annotated[
        QueryBoolean, Query(description="add the rows a rewind superseded")
    ] = False
    points: Annotated[
        QueryInteger | None,
        Query(
            description=(
                "at most about P rows keeping every bucket's lowest and highest values "
                "(2 to LRKEEPER_MAX_HISTORY_POINTS, 10000 by default); one answer, without "
                "cursor, limit or every"
            ),
        ),
    ] = None

    def query(self) -> run_history.HistoryQuery:
        return run_history.HistoryQuery(
            start=self.start,
            end=self.end,
            limit=self.limit,
            cursor=self.cursor,
            every=self.every,
            include_superseded=self.include_superseded,
        )


History = Annotated[HistoryParameters, Depends()]


@router.get(
    "/runs/{run_id}/history",
    responses={
        200: {
            "model": HistoryPage,
            "description": "One page (`limit`; next page: `next_cursor`), or a thinned answer",
        },
        **_PROBLEMS,
    },
)
def get_history(
    run_id: RunId,
    request: Request,
    database: DatabaseDependency,
    settings: SettingsDependency,
    parameters: History,
    format_: Annotated[
        Literal["json", "csv"] | None, Query(alias="format", include_in_schema=False)
    ] = None,
) -> Response:
    """The run's steps in order, step 0 included; follow ``next_cursor`` until it is null.

    CSV is its own operation (``get_history_csv``). ``?format=csv`` and ``Accept:
    text/csv`` on this path give the same CSV (API.md; the run pages link to it), left
    out of the document so that a generated client's ``get_history`` is JSON only.
    """
    if wants_csv(request, format_):
        return _history_as_csv(database, settings, run_id, parameters)
    return JSONResponse(_history_page(database, settings, run_id, parameters).as_dict())


@router.get(
    "/runs/{run_id}/history.csv",
    response_class=Response,
    responses={
        200: {
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
            "description": (
                "API.md's columns; with `limit`, one page (the next: X-Next-Cursor), "
                "else the whole history, streamed"
            ),
            "headers": {
                NEXT_CURSOR_HEADER: {
                    "description": "the cursor of the next page, when there is one",
                    "schema": {"type": "string"},
                }
            },
        },
        **_PROBLEMS,
    },
)
def get_history_csv(
    run_id: RunId,
    database: DatabaseDependency,
    settings: SettingsDependency,
    parameters: History,
) -> Response:
    """The run's steps as CSV: the same rows and query as ``get_history``."""
    return _history_as_csv(database, settings, run_id, parameters)


def _history_page(
    database: Database, settings: Settings, run_id: str, parameters: HistoryParameters
) -> run_history.HistoryPage:
    query = parameters.query()
    if parameters.points is not None:
        return thinning.thinned_history(
            database, run_id, query, parameters.points, max_points=settings.max_history_points
        )
    return run_history.history(database, run_id, query, max_limit=settings.max_history_limit)


def _history_as_csv(
    database: Database, settings: Settings, run_id: str, parameters: HistoryParameters
) -> Response:
    if parameters.points is None and parameters.limit is None:
        return _streamed_csv(database, run_id, parameters.query(), settings.max_history_limit)
    page = _history_page(database, settings, run_id, parameters)
    headers = {NEXT_CURSOR_HEADER: page.next_cursor} if page.next_cursor else {}
    return Response(
        history_csv(page), media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8", headers=headers
    )


def _streamed_csv(
    database: Database, run_id: str, query: run_history.HistoryQuery, page_size: int
) -> StreamingResponse:
    """The whole history as CSV, page after page (keyset-paged), with no Content-Length.

    The columns come first, from every metric name in range (run_history.csv_layout),
    so one header holds for every page. The first page is read before the answer
    starts: a missing run or a bad range is still a problem+json, not a cut stream.
    Each page is its own read, so a long download holds no connection between pages.
    """
    layout = run_history.csv_layout(database, run_id, query)
    query = dataclasses.replace(query, limit=page_size)
    first_page = run_history.history(database, run_id, query, max_limit=page_size)

    def pages() -> Iterator[str]:
        yield csv_text([csv_header(layout)])
        page = first_page
        while True:
            yield csv_text(csv_rows(page.items, layout))
            if page.next_cursor is None:
                return
            following = dataclasses.replace(query, cursor=page.next_cursor)
            page = run_history.history(database, run_id, following, max_limit=page_size)

    return StreamingResponse(pages(), media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8")


def history_csv(page: run_history.HistoryPage) -> str:
    """One page as CSV; its metric columns are the names the page's rows carry, sorted."""
    layout = run_history.CsvLayout.of_page(page)
    return csv_text([csv_header(layout), *csv_rows(page.items, layout)])


def csv_header(layout: run_history.CsvLayout) -> list[str]:
    """API.md's columns: step, lr_i, momentum_i (when cycled), one per metric, worker, ..."""
    groups = range(layout.group_count)
    return [
        "step",
        *(f"lr_{group}" for group in groups),
        *((f"momentum_{group}" for group in groups) if layout.cycles_momentum else ()),
        *layout.metric_names,
        "worker",
        "recorded_at",
        "superseded",
    ]


def csv_rows(items: Iterable[dict[str, Any]], layout: run_history.CsvLayout) -> Iterator[list[Any]]:
    for item in items:
        momentum = item.get("momentum") or [""] * layout.group_count
        yield [
            item["step"],
            *item["lr"],
            *(momentum if layout.cycles_momentum else []),
            *(item["metrics"].get(name, "") for name in layout.metric_names),
            item["worker"] or "",
            item["recorded_at"],
            "true" if item["superseded"] else "false",
        ]


def csv_text(rows: Iterable[list[Any]]) -> str:
    output = io.StringIO()
    csv.writer(output, lineterminator="\n").writerows(rows)
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
