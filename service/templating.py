"""The pages' Jinja2 environment: autoescaping on, and the filters that make values readable.

Built on first use (not at import), like the app itself.
"""

import functools
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import HTMLResponse

from service import describe, readable
from service.access import Mode
from service.routes.assets import static_url

TEMPLATES = Path(__file__).parent / "templates"


def run_url(run_id: str) -> str:
    return f"/runs/{quote(run_id, safe='')}"


@functools.cache
def templates() -> Jinja2Templates:
    # Starlette's Jinja2Templates turns autoescaping on for every template.
    pages = Jinja2Templates(directory=TEMPLATES)
    pages.env.filters.update(
        rounded=readable.rounded,
        rounded_list=readable.rounded_list,
        relative_time=readable.relative_time,
        progress=describe.progress,
    )
    pages.env.globals.update(
        static_url=static_url,
        run_url=run_url,
        plotly_url=static_url("vendor/plotly.min.js"),
    )
    return pages


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A page; the log-out button shows only where there is something to log out of."""
    logged_in = request.app.state.access.mode is Mode.TOKENS
    return templates().TemplateResponse(
        request, template, {"logged_in": logged_in, **context}, status_code=status_code
    )
