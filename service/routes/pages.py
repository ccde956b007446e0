"""A few HTML pages for people: the runs, one run with its lr drawn, and that chart as SVG.

Server-side HTML and an inline SVG chart (no JavaScript): everything shown is
read through ``service.runs`` like the JSON API. They need a read token, which a
person gives once in the login form (service.routes.login, service.access).
"""

import html
import json
import math
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from service.db import Database
from service.limits import NO_NUL_PATTERN
from service.routes.dependencies import DatabaseDependency, SettingsDependency
from service.routes.runs import RunId
from service.runs import catalog
from service.runs import history as run_history
from service.schemas import RunStatus

router = APIRouter(tags=["pages"])

SVG_MEDIA_TYPE = "image/svg+xml"
# The chart draws at most about this many points per group; longer runs are sampled.
CHART_POINTS = 1000
CHART_WIDTH, CHART_HEIGHT = 760, 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 20, 40
GROUP_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
RUNS_PER_PAGE = 50
EVENTS_SHOWN = 100

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.3rem 0.6rem; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
code, pre { background: #f6f6f6; padding: 0.1rem 0.3rem; }
nav a, .links a { margin-right: 1rem; }
.status-running { color: #1f77b4; } .status-finished { color: #2ca02c; }
.status-failed { color: #d62728; } .status-stale { color: #ff7f0e; }
"""


def _page(title: str, body: str) -> HTMLResponse:
    document = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} · lrkeeper</title><style>{STYLE}</style></head>"
        "<body><nav><a href='/'>runs</a><a href='/docs'>API docs</a>"
        "<form method='post' action='/logout' style='display:inline'>"
        f"<button>log out</button></form></nav>{body}</body></html>"
    )
    return HTMLResponse(document)


def _numbers(values: Sequence[Any]) -> str:
    return ", ".join(html.escape(str(value)) for value in values)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def runs_page(
    database: DatabaseDependency,
    settings: SettingsDependency,
    status: RunStatus | None = None,
    prefix: Annotated[str | None, Query(max_length=128, pattern=NO_NUL_PATTERN)] = None,
    cursor: str | None = None,
) -> HTMLResponse:
    """The runs, newest last, a page at a time, filterable by status and id prefix."""
    page = catalog.list_runs(
        database,
        status=status,
        prefix=prefix,
        limit=min(RUNS_PER_PAGE, settings.max_list_limit),
        cursor=cursor,
        max_limit=settings.max_list_limit,
        stale_after=settings.stale_after,
    )
    rows = "".join(
        "<tr>"
        f"<td><a href='/runs/{quote(run['run_id'])}'>{html.escape(run['run_id'])}</a></td>"
        f"<td class='status-{run['status']}'>{run['status']}</td>"
        f"<td>{html.escape(str(run['scheduler']['type']))}</td>"
        f"<td>{run['step']}</td><td>{_numbers(run['lr'])}</td>"
        f"<td>{html.escape(run['updated_at'])}</td>"
        "</tr>"
        for run in page.items
    )
    options = "".join(
        f"<option value='{value}'{' selected' if value == status else ''}>{value or 'any'}</option>"
        for value in ("", "running", "finished", "failed")
    )
    next_link = ""
    if page.next_cursor is not None:
        query = {"cursor": page.next_cursor, "status": status or "", "prefix": prefix or ""}
        next_link = f"<p><a href='/?{html.escape(urlencode(query))}'>next page</a></p>"
    body = (
        "<h1>Runs</h1>"
        "<form method='get' action='/'>"
        f"<label>status <select name='status'>{options}</select></label> "
        f"<label>id prefix <input name='prefix' value='{html.escape(prefix or '')}'></label> "
        "<button>filter</button></form>"
        "<table><thead><tr><th>run</th><th>status</th><th>schedule</th><th>step</th>"
        f"<th>lr</th><th>updated</th></tr></thead><tbody>{rows}</tbody></table>"
        f"{next_link if page.items else '<p>No runs yet.</p>'}"
    )
    return _page("runs", body)


def _chart_points(
    database: Database, run_id: str, current_step: int, max_limit: int
) -> list[tuple[int, list[Any]]]:
    """The current line of history, sampled down to about CHART_POINTS steps."""
    every = max(1, math.ceil((current_step + 1) / CHART_POINTS))
    page = run_history.history(
        database,
        run_id,
        run_history.HistoryQuery(
            start=None,
            end=None,
            limit=min(CHART_POINTS, max_limit),
            cursor=None,
            every=every,
            include_superseded=False,
        ),
        max_limit=max_limit,
    )
    points = [(item["step"], item["lr"]) for item in page.items]
    if points and points[-1][0] != current_step:
        last = run_history.history(
            database,
            run_id,
            run_history.HistoryQuery(
                start=current_step,
                end=current_step,
                limit=1,
                cursor=None,
                every=1,
                include_superseded=False,
            ),
            max_limit=max_limit,
        )
        points.extend((item["step"], item["lr"]) for item in last.items)
    return points


def lr_chart_svg(points: Sequence[tuple[int, Sequence[Any]]]) -> str:
    """An SVG line chart of each group's lr over the steps (non-finite values are left out)."""
    finite = [
        (step, float(lr))
        for step, lrs in points
        for lr in lrs
        if isinstance(lr, int | float) and math.isfinite(lr)
    ]
    plot_width = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    first_step = points[0][0] if points else 0
    last_step = points[-1][0] if points else 1
    step_span = max(last_step - first_step, 1)
    top_lr = max((lr for _, lr in finite), default=1.0) or 1.0
    bottom_lr = min(0.0, min((lr for _, lr in finite), default=0.0))
    lr_span = top_lr - bottom_lr or 1.0

    def x(step: int) -> float:
        return MARGIN_LEFT + (step - first_step) / step_span * plot_width

    def y(lr: float) -> float:
        return MARGIN_TOP + (top_lr - lr) / lr_span * plot_height

    group_count = max((len(lrs) for _, lrs in points), default=0)
    lines = []
    for group in range(group_count):
        coordinates = " ".join(
            f"{x(step):.1f},{y(float(lrs[group])):.1f}"
            for step, lrs in points
            if group < len(lrs)
            and isinstance(lrs[group], int | float)
            and math.isfinite(lrs[group])
        )
        colour = GROUP_COLOURS[group % len(GROUP_COLOURS)]
        lines.append(
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{coordinates}'>"
            f"<title>group {group}</title></polyline>"
        )
    axis_bottom = MARGIN_TOP + plot_height
    labels = (
        f"<text x='{MARGIN_LEFT - 6}' y='{MARGIN_TOP + 4}' text-anchor='end'>{top_lr:.3g}</text>"
        f"<text x='{MARGIN_LEFT - 6}' y='{axis_bottom + 4}' text-anchor='end'>"
        f"{bottom_lr:.3g}</text>"
        f"<text x='{MARGIN_LEFT}' y='{axis_bottom + 18}' text-anchor='middle'>{first_step}</text>"
        f"<text x='{MARGIN_LEFT + plot_width}' y='{axis_bottom + 18}' text-anchor='middle'>"
        f"{last_step}</text>"
        f"<text x='{MARGIN_LEFT + plot_width / 2}' y='{CHART_HEIGHT - 6}' text-anchor='middle'>"
        "step</text>"
        f"<text x='14' y='{MARGIN_TOP + plot_height / 2}' text-anchor='middle' "
        f"transform='rotate(-90 14 {MARGIN_TOP + plot_height / 2})'>lr</text>"
    )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{CHART_WIDTH}' height='{CHART_HEIGHT}' "
        f"viewBox='0 0 {CHART_WIDTH} {CHART_HEIGHT}' font-family='sans-serif' font-size='11' "
        "role='img' aria-label='lr over steps'>"
        f"<rect x='{MARGIN_LEFT}' y='{MARGIN_TOP}' width='{plot_width}' height='{plot_height}' "
        "fill='white' stroke='#999'/>"
        f"{labels}{''.join(lines)}</svg>"
    )


def _run_chart(database: Database, run: dict[str, Any], max_limit: int) -> str:
    return lr_chart_svg(_chart_points(database, run["run_id"], run["step"], max_limit))


@router.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
def run_page(
    run_id: RunId, database: DatabaseDependency, settings: SettingsDependency
) -> HTMLResponse:
    """One run: what it is, where it stands, its lr drawn, its events, links to the data."""
    run = catalog.get_run(database, run_id, stale_after=settings.stale_after)
    events = run_history.list_events(
        database,
        run_id,
        limit=min(EVENTS_SHOWN, settings.max_history_limit),
        cursor=None,
        max_limit=settings.max_history_limit,
    )
    api = f"/v1/runs/{quote(run_id)}"
    links = (
        f"<p class='links'><a href='{api}'>run (JSON)</a>"
        f"<a href='{api}/history'>history (JSON)</a>"
        f"<a href='{api}/history?format=csv&amp;limit={settings.max_history_limit}'>"
        "history (CSV)</a>"
        f"<a href='{api}/events'>events (JSON)</a><a href='{api}/chart.svg'>chart (SVG)</a></p>"
    )
    momentum = (
        f"<tr><th>momentum</th><td>{_numbers(run['momentum'])}</td></tr>"
        if "momentum" in run
        else ""
    )
    facts = (
        "<table>"
        f"<tr><th>status</th><td class='status-{run['status']}'>{run['status']}</td></tr>"
        f"<tr><th>step</th><td>{run['step']}</td></tr>"
        f"<tr><th>lr</th><td>{_numbers(run['lr'])}</td></tr>{momentum}"
        f"<tr><th>created</th><td>{html.escape(run['created_at'])}</td></tr>"
        f"<tr><th>updated</th><td>{html.escape(run['updated_at'])}</td></tr>"
        "</table>"
    )
    event_rows = "".join(
        f"<tr><td>{event['step']}</td><td>{html.escape(event['kind'])}</td>"
        f"<td><code>{html.escape(json.dumps(event['detail']))}</code></td>"
        f"<td>{html.escape(event['recorded_at'])}</td></tr>"
        for event in events.items
    )
    body = (
        f"<h1>{html.escape(run_id)}</h1>{links}{facts}"
        f"<h2>lr over steps</h2>{_run_chart(database, run, settings.max_history_limit)}"
        f"<h2>Schedule</h2><pre>{html.escape(json.dumps(run['scheduler'], indent=2))}</pre>"
        f"<h2>Param groups</h2><pre>{html.escape(json.dumps(run['param_groups'], indent=2))}</pre>"
        f"<h2>Metadata</h2><pre>{html.escape(json.dumps(run['metadata'], indent=2))}</pre>"
        "<h2>Events</h2>"
        + (
            "<table><thead><tr><th>step</th><th>kind</th><th>detail</th><th>recorded</th></tr>"
            f"</thead><tbody>{event_rows}</tbody></table>"
            if event_rows
            else "<p>None yet.</p>"
        )
    )
    return _page(run_id, body)


@router.get(
    "/v1/runs/{run_id}/chart.svg",
    response_class=Response,
    responses={200: {"content": {SVG_MEDIA_TYPE: {}}, "description": "lr over steps"}},
    tags=["history"],
)
def run_chart(
    run_id: RunId, database: DatabaseDependency, settings: SettingsDependency
) -> Response:
    """The run's lr over its current line of history, one line per param group, as SVG."""
    run = catalog.get_run(database, run_id, stale_after=settings.stale_after)
    return Response(
        _run_chart(database, run, settings.max_history_limit), media_type=SVG_MEDIA_TYPE
    )
