"""The login form for the HTML pages: a token typed once, kept in an HttpOnly cookie.

The token travels in a POSTed form body and a cookie, never in a URL (URLs end up
in access logs, browser history and Referer headers). The cookie is HttpOnly (no
script reads it), SameSite=Strict (no other site's page sends it), Path=/, and
Secure when the request came over https (a trusted proxy's X-Forwarded-Proto
counts, as uvicorn reads it). It lasts for the browser session. service.access
honours it for GET and HEAD of the pages only, never for ``/v1``.
"""

from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.access import (
    LOGIN_PATH,
    LOGOUT_PATH,
    TOKEN_COOKIE,
    AccessPolicy,
    Mode,
    encode_cookie_token,
)
from service.problems import http_exception_response
from service.templating import render

router = APIRouter(tags=["pages"], include_in_schema=False)

# A form holding one token and one path; anything longer is not our form.
MAX_FORM_BYTES = 8192


def _safe_next(target: str | None) -> str:
    """Only a path on this service: ``//evil.example`` or ``https://...`` would be an open
    redirect handing the person (just logged in) to someone else's page."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _form(request: Request, next_path: str, message: str = "") -> HTMLResponse:
    context = {"login_path": LOGIN_PATH, "next_path": next_path, "message": message}
    return render(request, "login.html", context)


async def _form_fields(request: Request) -> dict[str, str] | None:
    """The urlencoded form (no python-multipart needed for two fields); None if too large."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=10)
    return {name: values[0] for name, values in fields.items()}


@router.get(LOGIN_PATH, response_class=HTMLResponse)
def login_form(
    request: Request, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    policy: AccessPolicy = request.app.state.access
    if policy.mode is not Mode.TOKENS:
        return RedirectResponse(_safe_next(next_path), status_code=303)
    return _form(request, _safe_next(next_path))


@router.post(LOGIN_PATH, response_class=HTMLResponse)
async def log_in(request: Request) -> Response:
    """Check the token; a good one is kept in the cookie and the person sent on."""
    policy: AccessPolicy = request.app.state.access
    fields = await _form_fields(request)
    if fields is None:
        return http_exception_response(
            413, f"the login form is limited to {MAX_FORM_BYTES} bytes", None
        )
    next_path = _safe_next(fields.get("next"))
    if policy.mode is not Mode.TOKENS:
        return RedirectResponse(next_path, status_code=303)
    token = fields.get("token", "")
    if not token or policy.page_role(token) is None:
        # The form again (200, as login forms answer), never with the token in it.
        return _form(request, next_path, "That token is not one this service knows.")
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        TOKEN_COOKIE,
        encode_cookie_token(token),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post(LOGOUT_PATH)
def log_out(request: Request) -> Response:
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(
        TOKEN_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
