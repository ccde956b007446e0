"""Every error the service answers, as RFC 9457 ``application/problem+json``.

A ``Problem`` subclass knows its status, slug and title; raising one anywhere
below a route is all it takes to answer with it. The adapters here turn what the
framework raises (validation errors, unmatched routes and methods, a body that
is not JSON) and anything unexpected into the same shape, so a client has one
vocabulary to parse and never sees a traceback.

    Problem
    ├── InvalidJson          400 invalid-json         (limit, max when too deep)
    ├── NotFound             404 not-found
    ├── MethodNotAllowed     405 method-not-allowed
    ├── RunConflict          409 run-conflict         (differences)
    ├── StepOutOfOrder       409 step-out-of-order    (expected_step)
    ├── ScheduleEnded        409 schedule-ended       (step, total_steps)
    ├── ScheduleFailed       409 schedule-failed      (step, parameter, reason)
    ├── RunNotRunning        409 run-not-running      (run_status, step)
    ├── RankMetricConflict   409 rank-metric-conflict (rank, step, stored)
    ├── NotEnoughData        409 not-enough-data
    ├── PayloadTooLarge      413 payload-too-large    (limit, max)
    ├── UnsupportedMediaType 415 unsupported-media-type
    ├── InvalidRequest       422 invalid-request      (errors: [{"loc", "msg"}]; limit, max)
    ├── Unauthorized         401 unauthorized
    ├── Forbidden            403 forbidden
    ├── ServiceUnavailable   503 service-unavailable
    │   └── DatabaseUnavailable                       (Retry-After)
    └── InternalError        500 internal-error
"""

import logging
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from service.limits import LIMIT_EXCEEDED
from service.routing import allowed_methods
from service.schedules.codec import encode_floats

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:lrkeeper:problem:"

logger = logging.getLogger("lrkeeper.errors")


class Problem(Exception):
    """An answer that is an error; extensions become extra members of the JSON object."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extensions,
        }


class InvalidJson(Problem):
    """The body cannot be read as JSON at all: malformed, not UTF-8, or nested deeper than
    ``LRKEEPER_MAX_JSON_DEPTH``. One type for all three, because a client fixes each the
    same way (send other bytes), and none of them names a field (that is a 422)."""

    status, slug, title = 400, "invalid-json", "The request body is not valid JSON"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class RunConflict(Problem):
    status, slug, title = 409, "run-conflict", "Run exists with another configuration"


class StepOutOfOrder(Problem):
    status, slug, title = 409, "step-out-of-order", "Step out of order"


class ScheduleEnded(Problem):
    status, slug, title = 409, "schedule-ended", "Schedule has ended"


class ScheduleFailed(Problem):
    """The schedule cannot compute this step (an expression divides by zero, a value
    overflows): torch would crash here. The run stays as it was, so an operator can set
    the lr by hand, rewind, or mark it failed; the failure is recorded as an event."""

    status, slug, title = 409, "schedule-failed", "The schedule failed at this step"

    @property
    def step(self) -> int:
        step: int = self.extensions["step"]
        return step

    def event_detail(self) -> dict[str, Any]:
        return {"message": self.detail, **self.extensions}


class RunNotRunning(Problem):
    status, slug, title = 409, "run-not-running", "The run is not running"

    def __init__(self, detail: str, **extensions: Any) -> None:
        # The run's status travels as ``run_status``: under ``status`` it overwrote the
        # problem's own (RFC 9457: the HTTP status code, an integer).
        if "status" in extensions:
            extensions["run_status"] = extensions.pop("status")
        super().__init__(detail, **extensions)


class RankMetricConflict(Problem):
    """A rank reported other metrics for a step it had already reported: one of the two
    reports is wrong, and which one fed (or will feed) the decision cannot be undone."""

    status, slug, title = 409, "rank-metric-conflict", "The rank reported other metrics"


class NotEnoughData(Problem):
    status, slug, title = 409, "not-enough-data", "Not enough data"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class InvalidRequest(Problem):
    status, slug, title = 422, "invalid-request", "Invalid request"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Unauthorized"
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Forbidden"


class ServiceUnavailable(Problem):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database did not answer in time (down, cut off, locked, full): worth a retry."""

    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "2"}


class InternalError(Problem):
    status, slug, title = 500, "internal-error", "Internal server error"


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> JSONResponse:
    # encode_floats: an extension (a config difference, say) may hold NaN or inf,
    # which strict JSON cannot carry; they travel as "NaN"/"Infinity" like everywhere else.
    return JSONResponse(
        encode_floats(problem.to_dict()),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={**problem.headers, **(headers or {})},
    )


_PROBLEMS_BY_STATUS: dict[int, type[Problem]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    503: ServiceUnavailable,
}


def http_exception_response(
    status: int, detail: str, headers: Mapping[str, str] | None
) -> Response:
    """The problem answer for an HTTPException raised by the framework or a library below us."""
    problem_class = _PROBLEMS_BY_STATUS.get(status)
    if problem_class is not None:
        return problem_response(problem_class(detail), headers)
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = f"HTTP {status}"
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    body = {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail}
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {})
    )


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's (pydantic's) error list reduced to the contract's ``{"loc", "msg"}``."""
    return [
        {
            "loc": [part for part in error.get("loc", ()) if isinstance(part, str | int)],
            "msg": str(error.get("msg", "invalid")),
        }
        for error in errors
    ]


def invalid_request_for(exc: RequestValidationError) -> InvalidJson | InvalidRequest:
    errors = list(exc.errors())
    # service.json_body reads every JSON body first; this is FastAPI's own parse, for a
    # route that does not use it, answered with the same problem type.
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "malformed")
            return InvalidJson(f"the request body is not valid JSON: {reason}")
    reduced = validation_errors(errors)
    if not reduced:
        return InvalidRequest("the request is invalid", errors=[])
    first = reduced[0]
    where = ".".join(str(part) for part in first["loc"]) or "request"
    more = f" (and {len(reduced) - 1} more)" if len(reduced) > 1 else ""
    return InvalidRequest(f"{where}: {first['msg']}{more}", errors=reduced, **_limit_of(errors))


def _limit_of(errors: Sequence[Any]) -> dict[str, Any]:
    """``limit`` and ``max`` of the first size limit the request broke (service.limits)."""
    for error in errors:
        if error.get("type") == LIMIT_EXCEEDED:
            context = error.get("ctx") or {}
            return {"limit": context.get("limit"), "max": context.get("max")}
    return {}


async def _render_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    if isinstance(exc, DatabaseUnavailable):
        request.app.state.metrics.database_errors.labels("unavailable").inc()
    return problem_response(exc)


async def _render_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(invalid_request_for(exc))


async def _render_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such resource"
    elif exc.status_code == 405:
        detail = f"this resource does not support {request.method}"
        # Starlette's Allow names the first matching route's methods only.
        allow = allowed_methods(request.app.router.routes, request.scope)
        return http_exception_response(405, detail, {**(exc.headers or {}), "Allow": allow})
    return http_exception_response(exc.status_code, detail, exc.headers)


def log_unexpected_error(scope: Scope) -> None:
    """Log the exception being handled, traceback included (service.edge's safety net)."""
    logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))


def internal_error_response() -> Response:
    """The generic 500: what failed is in the log, never in the answer."""
    return problem_response(InternalError("the service failed to handle this request; see its log"))


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error raised below ``app`` as application/problem+json."""
    app.add_exception_handler(Problem, _render_problem)
    app.add_exception_handler(RequestValidationError, _render_validation_error)
    app.add_exception_handler(StarletteHTTPException, _render_http_exception)
