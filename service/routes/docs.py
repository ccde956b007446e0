"""``/docs`` (Swagger UI) and ``/redoc``, with their scripts served by the service.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without
internet they are blank; these load them from service.routes.assets. A
Content-Security-Policy keeps them to this service: ReDoc's footer asks a CDN for
its logo on every view, which the browser now never sends.
"""

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from service.routes.assets import static_url

router = APIRouter(tags=["pages"], include_in_schema=False)

OPENAPI_URL = "/openapi.json"
# The pages' own bootstrap is an inline script, their components inject styles, and
# ReDoc's search runs in a worker made from a blob.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _kept_here(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{request.app.title} · API docs",
        swagger_js_url=static_url("docs/swagger-ui-bundle.js"),
        swagger_css_url=static_url("docs/swagger-ui.css"),
        swagger_favicon_url=static_url("docs/favicon.png"),
    )
    return _kept_here(page)


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=OPENAPI_URL,
        title=f"{request.app.title} · ReDoc",
        redoc_js_url=static_url("docs/redoc.standalone.js"),
        redoc_favicon_url=static_url("docs/favicon.png"),
        with_google_fonts=False,
    )
    return _kept_here(page)
