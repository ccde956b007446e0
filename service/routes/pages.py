"""The pages for people: the runs, one run, several runs on one chart, a schedule preview.

Server-side HTML from Jinja2 templates (service/templates, autoescaped); the charts
are drawn in the browser by service/static/charts.js, which reads the run's
thinned history from ``/v1`` as any API client would (the login cookie opens the
API's reads). Everything shown is read through ``service.runs`` like the JSON API.
A page the service cannot show (an unknown run) is an HTML 404, not problem+json.
"""

import json
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from service import describe
from service.problems import NotFound, Problem
from service.routes.dependencies import DatabaseDependency, SettingsDependency
from service.runs import catalog
from service.runs import history as run_history
from service.runs.preview import preview
from service.schemas import RUN_ID_PREFIX_PATTERN, PreviewRequest, RunStatus
from service.templating import render

router = APIRouter(tags=["pages"], include_in_schema=False)

RUNS_PER_PAGE = 50
EVENTS_SHOWN = 200
# Runs drawn on one chart; each is one history read per zoom.
MAX_COMPARED_RUNS = 8
# A preview page carries every value in the page; longer curves belong to the API.
MAX_PAGE_PREVIEW_STEPS = 20_000
STATUSES = ("", "running", "stale", "finished", "failed")
EXAMPLE_SCHEDULER = {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": 1000}}
EXAMPLE_PARAM_GROUPS = [{"lr": 0.1, "momentum": 0.9}]


def _not_found(request: Request, message: str) -> HTMLResponse:
    return render(request, "not_found.html", {"message": message}, status_code=404)


@router.get("/", response_class=HTMLResponse)
def runs_page(
    request: Request,
    database: DatabaseDependency,
    settings: SettingsDependency,
    # The form sends ``status=`` and ``prefix=`` for "any".
    status: RunStatus | Literal[""] | None = None,
    prefix: Annotated[str | None, Query(max_length=128, pattern=RUN_ID_PREFIX_PATTERN)] = None,
    cursor: str | None = None,
) -> HTMLResponse:
    """The runs, newest first, a page at a time, filterable by status and id prefix."""
    status = status or None
    page = catalog.list_runs(
        database,
        status=status,
        prefix=prefix or None,
        limit=min(RUNS_PER_PAGE, settings.max_list_limit),
        cursor=cursor,
        max_limit=settings.max_list_limit,
        stale_after=settings.stale_after,
        newest_first=True,
    )
    filters = {name: value for name, value in (("status", status), ("prefix", prefix)) if value}
    next_page_url = (
        "/?" + urlencode({**filters, "cursor": page.next_cursor}) if page.next_cursor else None
    )
    first_page_url = ("/?" + urlencode(filters)) if cursor else None
    return render(
        request,
        "runs.html",
        {
            "runs": page.items,
            "status": status,
            "prefix": prefix,
            "statuses": STATUSES,
            "next_page_url": next_page_url,
            "first_page_url": first_page_url,
        },
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    run_id: str, request: Request, database: DatabaseDependency, settings: SettingsDependency
) -> HTMLResponse:
    """One run: where it stands (in words too), its chart, its events, its data."""
    try:
        run = catalog.get_run(database, run_id, stale_after=settings.stale_after)
    except NotFound:
        return _not_found(request, f"There is no run {run_id!r}.")
    events = run_history.list_events(
        database,
        run_id,
        limit=min(EVENTS_SHOWN, settings.max_history_limit),
        cursor=None,
        max_limit=settings.max_history_limit,
    )
    return render(
        request,
        "run.html",
        {
            "run": run,
            "api_url": f"/v1/runs/{quote(run_id, safe='')}",
            "state_words": describe.state_in_words(run),
            "events": events.items,
            "more_events": events.next_cursor is not None,
        },
    )


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    database: DatabaseDependency,
    settings: SettingsDependency,
    run: Annotated[list[str] | None, Query(max_length=MAX_COMPARED_RUNS)] = None,
) -> HTMLResponse:
    """Several runs' lr on one chart (picked on the runs page)."""
    run_ids = list(dict.fromkeys(run or []))
    for run_id in run_ids:
        try:
            catalog.get_run(database, run_id, stale_after=settings.stale_after)
        except NotFound:
            return _not_found(request, f"There is no run {run_id!r} to compare.")
    return render(request, "compare.html", {"run_ids": run_ids})


@router.get("/preview", response_class=HTMLResponse)
def preview_page(
    request: Request,
    settings: SettingsDependency,
    scheduler: Annotated[str | None, Query(max_length=20_000)] = None,
    param_groups: Annotated[str | None, Query(max_length=20_000)] = None,
    steps: Annotated[int, Query(ge=0, le=MAX_PAGE_PREVIEW_STEPS)] = 100,
) -> HTMLResponse:
    """A config typed or pasted, and its curve: POST /v1/preview's work, as a GET form."""
    scheduler_text = scheduler or json.dumps(EXAMPLE_SCHEDULER, indent=2)
    param_groups_text = param_groups or json.dumps(EXAMPLE_PARAM_GROUPS)
    context: dict[str, Any] = {
        "scheduler_text": scheduler_text,
        "param_groups_text": param_groups_text,
        "steps": steps,
        "max_steps": MAX_PAGE_PREVIEW_STEPS,
        "errors": [],
        "values": None,
    }
    if scheduler is None:
        return render(request, "preview.html", context)
    try:
        body = {
            "scheduler": _json_field("scheduler", scheduler_text),
            "param_groups": _json_field("param_groups", param_groups_text),
            "steps": steps,
        }
        values = preview(
            PreviewRequest.model_validate(body),
            max_preview_steps=settings.max_preview_steps,
            max_preview_values=settings.max_preview_values,
            max_param_groups=settings.max_param_groups,
        )
    except _UnreadableField as error:
        context["errors"] = [{"field": error.field, "message": error.message}]
    except ValidationError as error:
        context["errors"] = [
            {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
            for item in error.errors()
        ]
    except Problem as error:
        context["errors"] = [
            {"field": ".".join(str(part) for part in item["loc"][1:]), "message": item["msg"]}
            for item in error.extensions.get("errors", [])
        ] or [{"field": "scheduler", "message": str(error)}]
    else:
        context["values"] = values
    return render(request, "preview.html", context, status_code=422 if context["errors"] else 200)


class _UnreadableField(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _json_field(field: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _UnreadableField(field, f"not JSON: {error}") from None
