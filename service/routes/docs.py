"""``/docs`` (Swagger UI) and ``/redoc``, with their scripts served by the service.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without
internet they are blank; these load them from service.routes.assets.
"""

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from service.routes.assets import static_url

router = APIRouter(tags=["pages"], include_in_schema=False)

OPENAPI_URL = "/openapi.json"


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{request.app.title} · API docs",
        swagger_js_url=static_url("docs/swagger-ui-bundle.js"),
        swagger_css_url=static_url("docs/swagger-ui.css"),
        swagger_favicon_url=static_url("docs/favicon.png"),
    )


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=OPENAPI_URL,
        title=f"{request.app.title} · ReDoc",
        redoc_js_url=static_url("docs/redoc.standalone.js"),
        redoc_favicon_url=static_url("docs/favicon.png"),
        with_google_fonts=False,
    )
