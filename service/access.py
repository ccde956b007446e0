"""Who may call what, decided once per request in one pure ASGI middleware.

Three modes, fixed at app creation:

- **tokens** (``LRKEEPER_TOKENS`` set): every call but the open ones needs a
  token. Reading (GET, HEAD, OPTIONS, and ``POST /v1/preview``, which stores
  nothing) needs a read token; any other call a write token (write can read).
  The token comes from ``Authorization: Bearer``, or, for GET and HEAD only
  (pages and the API's reads alike), from the cookie the login form sets: the
  pages' charts read ``/v1`` history from the browser, and a person follows a
  page's link to JSON or CSV. A browser sends a cookie on its own, so a cookie
  honoured on a call that changes something would let any page the person
  visits make that call (CSRF); SameSite=Strict narrows that, the method rule
  closes it (a read sent by another site's page is never shown to that page).
- **protected** (no tokens): loopback clients only (service.client_address).
- **anonymous** (no tokens, ``LRKEEPER_ALLOW_ANONYMOUS=true``): everyone, everything.

Open in every mode: /healthz, /readyz, /metrics (an orchestrator polls them),
the login form, and /docs and /openapi.json, which describe the API and hold no data.

Why a middleware and not a FastAPI dependency per route: the rule follows from
the method and the path prefix alone, so a route added later is covered without
anyone remembering a ``Depends``; and resolving a dependency costs ~10 µs a
request, where this check costs about one (``python -m bench.access``).
Everything it compares against is built here, at app creation.
"""

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from fastapi import FastAPI
from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import Role, Tokens, describe
from service.client_address import is_loopback_client
from service.config import Settings
from service.problems import Forbidden, Unauthorized, problem_response

TOKEN_COOKIE = "lrkeeper_token"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
API_PREFIX = "/v1"
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that only compute (API.md: "POST /v1/preview included" among the reads).
READING_POST_PATH = "/v1/preview"

NO_TOKEN = (
    "this call needs a token: send `Authorization: Bearer <token>` "
    "(the client and the CLI read it from LRKEEPER_TOKEN)"
)
UNKNOWN_TOKEN = "the bearer token is not one this service is configured with (LRKEEPER_TOKENS)"
MALFORMED_AUTHORIZATION = "the Authorization header must read `Bearer <token>`"
READ_ONLY_TOKEN = "this token may only read; this call changes something and needs a write token"
PROTECTED_MODE = (
    "this service has no tokens configured, so it answers clients on its own machine only. "
    "To let other clients in, start it with LRKEEPER_TOKENS=read:<token>,write:<token> "
    "and send `Authorization: Bearer <token>` (LRKEEPER_TOKEN for the client), or with "
    "LRKEEPER_ALLOW_ANONYMOUS=true to let every client read and write on a trusted network"
)


class Mode(enum.Enum):
    TOKENS = "tokens"
    PROTECTED = "protected"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class AccessPolicy:
    """The access settings, parsed: ``from_settings`` raises InvalidTokens on a bad entry."""

    tokens: Tokens
    mode: Mode
    allow_anonymous: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> "AccessPolicy":
        tokens = Tokens.parse(settings.tokens)
        if tokens:
            mode = Mode.TOKENS
        elif settings.allow_anonymous:
            mode = Mode.ANONYMOUS
        else:
            mode = Mode.PROTECTED
        return cls(tokens=tokens, mode=mode, allow_anonymous=settings.allow_anonymous)

    def describe(self) -> str:
        """The one line ``lrkeeper serve`` logs at start."""
        if self.mode is Mode.TOKENS:
            ignored = (
                "; LRKEEPER_ALLOW_ANONYMOUS is ignored while tokens are set"
                if self.allow_anonymous
                else ""
            )
            return f"access: {describe(self.tokens)}{ignored}"
        if self.mode is Mode.ANONYMOUS:
            return "access: anonymous, every client may read and write"
        return (
            "access: protected mode, loopback clients only; "
            "set LRKEEPER_TOKENS or LRKEEPER_ALLOW_ANONYMOUS=true"
        )

    def page_role(self, token: str) -> Role | None:
        """The role of a token typed into the login form."""
        return self.tokens.role_of(token.encode())


def required_role(method: str, path: str) -> Role:
    """Read for GET, HEAD, OPTIONS and POST /v1/preview(/...); write for anything else."""
    if method in READING_METHODS:
        return Role.READ
    if method == "POST" and (path == READING_POST_PATH or path.startswith(READING_POST_PATH + "/")):
        return Role.READ
    return Role.WRITE


def bearer_token(authorization: bytes) -> bytes | None:
    """The token of ``Bearer <token>`` (the scheme in any case, RFC 9110); None otherwise."""
    if authorization[:7].lower() != b"bearer ":
        return None
    token = authorization[7:].strip()
    return token if token and b" " not in token else None


def cookie_token(cookie_header: bytes) -> bytes | None:
    value = cookie_parser(cookie_header.decode("latin-1")).get(TOKEN_COOKIE)
    return unquote(value).encode() if value else None


def encode_cookie_token(token: str) -> str:
    """Percent-encoded, so any token fits a cookie value."""
    return quote(token, safe="")


class AccessMiddleware:
    """Refuses a request its caller may not make, before any routing or body parsing."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy, open_paths: Iterable[str]) -> None:
        self.app = app
        self.tokens = policy.tokens
        self.mode = policy.mode
        self.open_paths = frozenset(open_paths)
        # Each refusal is a new Response: one shared between requests would share its header
        # list, which an outer middleware adding a header (MutableHeaders) extends in place.
        self.no_token = functools.partial(problem_response, Unauthorized(NO_TOKEN))
        self.unknown_token = functools.partial(problem_response, Unauthorized(UNKNOWN_TOKEN))
        self.malformed = functools.partial(problem_response, Unauthorized(MALFORMED_AUTHORIZATION))
        self.read_only = functools.partial(problem_response, Forbidden(READ_ONLY_TOKEN))
        self.protected = functools.partial(problem_response, Forbidden(PROTECTED_MODE))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.mode is not Mode.ANONYMOUS
            and scope["type"] == "http"
            and scope["path"] not in self.open_paths
        ):
            if self.mode is Mode.TOKENS:
                refusal = self.token_refusal(scope)
            else:
                refusal = None if is_loopback_client(scope) else self.protected()
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def token_refusal(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        method: str = scope["method"]
        authorization = cookie = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"cookie":
                cookie = value
        cookie_allowed = method in READING_METHODS
        page = cookie_allowed and not path.startswith(API_PREFIX)
        if authorization is not None:
            token = bearer_token(authorization)
            if token is None:
                return self.malformed()
        elif cookie_allowed and cookie is not None:
            token = cookie_token(cookie)
        else:
            token = None
        if token is None:
            return login_redirect(scope) if page else self.no_token()
        role = self.tokens.role_of(token)
        if role is None:
            # A stale cookie (the token was revoked) sends the person back to the form.
            return login_redirect(scope) if page and authorization is None else self.unknown_token()
        # A write token may do anything, so only a read token's call is classified.
        if role is not Role.WRITE and required_role(method, path) is Role.WRITE:
            return self.read_only()
        return None


def login_redirect(scope: Scope) -> Response:
    """A person at a page without a token is sent to the form, and back here after it."""
    target = scope["path"]
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)


def install_access_control(app: FastAPI, settings: Settings, open_paths: Iterable[str]) -> None:
    """Parse the access settings (InvalidTokens stops the app here) and guard ``app``.

    ``open_paths`` come from the routes that need no token; FastAPI's own docs
    and schema paths are added here. Call before the outer middlewares are added,
    so they see (and count) the refusals.
    """
    policy = AccessPolicy.from_settings(settings)
    app.state.access = policy
    documentation = (
        app.openapi_url,
        app.docs_url,
        app.redoc_url,
        app.swagger_ui_oauth2_redirect_url,
    )
    every_open_path = {*open_paths, *(path for path in documentation if path)}
    app.add_middleware(AccessMiddleware, policy=policy, open_paths=every_open_path)
