"""``/openapi.json`` as exact as the server: what a generated client and a fuzzer rely on.

FastAPI documents what the route signatures say. What they cannot say is added
here, once, when the document is first asked for (never on a request's path):

- one ``Problem`` schema, served as ``application/problem+json`` for every error
  status a route can answer: 401/403 (tokens) and 500 everywhere under /v1, 503
  wherever the database is read, 400/413/415/422 for bodies, 404 under a run;
- the headers: ``X-Request-ID`` on every answer, ``Retry-After`` on 503,
  ``WWW-Authenticate`` on 401, ``Location`` on a PUT;
- operationIds from the route functions' names (``put_run``, ``report_step``);
- paging ``limit``s between 1 and the app's settings;
- request bodies as strict as the engine (service.request_schemas);
- links from each answer to the calls it leads to (service.openapi_links).

The 405 for a method a path lacks is not an operation's answer, so it is not
declared; its ``Allow`` names every method of the path (service.routing).

HEAD operations are left out: HEAD is answered wherever GET is (service.routing),
and a second operation per path would only add duplicate names to a client.
"""

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from service.config import Settings
from service.openapi_links import add_links
from service.problems import PROBLEM_MEDIA_TYPE
from service.request_schemas import SCHEMAS_REF, tighten_request_schemas

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; the extension members depend on `type`.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:lrkeeper:problem:<slug>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "invalid-request: each refused field",
            "items": {"$ref": SCHEMAS_REF + "ProblemFieldError"},
        },
        "expected_step": {"type": "integer", "description": "step-out-of-order"},
        "differences": {
            "type": "array",
            "description": "run-conflict: where the stored config differs",
            "items": {},
        },
        "step": {"type": "integer"},
        "total_steps": {"type": "integer", "description": "schedule-ended"},
        "parameter": {
            "type": ["string", "null"],
            "description": "schedule-failed: the parameter that failed, when one did",
        },
        "reason": {"type": "string", "description": "schedule-failed"},
        "limit": {"type": ["string", "null"], "description": "the setting a request exceeded"},
        "max": {"type": ["integer", "null"], "description": "that setting's value"},
        "run_status": {"type": "string", "description": "run-not-running"},
    },
}
PROBLEM_FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ProblemFieldError",
    "type": "object",
    "required": ["loc", "msg"],
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
    },
}

_REQUEST_ID_HEADER = {
    "X-Request-ID": {
        "description": "The client's own id when it sent a sane one, else a fresh one",
        "schema": {"type": "string"},
    }
}
_PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    503: {
        "Retry-After": {
            "schema": {"type": "integer"},
            "description": "Seconds; sent when the database did not answer",
        }
    },
}
_PROBLEM_DESCRIPTIONS = {
    400: "The body could not be parsed as JSON",
    401: "No token, an unknown token, or a malformed Authorization header",
    403: "A read token on a call that writes",
    404: "No such run",
    409: "The run's state refuses this call; `type` says why",
    413: "The body is larger than LRKEEPER_MAX_BODY_BYTES; `limit` and `max` name it",
    415: "The body was not sent as application/json (service.json_body)",
    422: "Invalid request; `errors` names each field",
    500: "The service failed; what failed is in its log",
    503: "The database did not answer; retry after `Retry-After` seconds",
}
# The writes on a run: each can meet a run whose state refuses it.
_RUN_WRITES = {"put_run", "update_run", "report_step", "set_lr", "rewind_run"}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Replace ``app.openapi`` with the exact document, built on first use."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    routes = [route for route in app.routes if isinstance(route, APIRoute)]
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=[_without_head(route) for route in routes],
    )
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ProblemFieldError"] = PROBLEM_FIELD_ERROR_SCHEMA
    tighten_request_schemas(schemas, settings)
    paging_limits = {
        "list_runs": settings.max_list_limit,
        "get_history": settings.max_history_limit,
        "get_history_csv": settings.max_history_limit,
        "get_events": settings.max_history_limit,
    }
    # The bounds a setting decides, declared as this service enforces them.
    setting_bounds = {
        "points": {"type": "integer", "minimum": 2, "maximum": settings.max_history_points},
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            route = next(r for r in routes if r.path == path and method.upper() in r.methods)
            operation["operationId"] = route.name
            _bound_limit(operation, paging_limits.get(route.name))
            _bound_settings(operation, setting_bounds)
            for parameter in operation.get("parameters", ()):
                _json_schema_bounds(parameter["schema"])
            _declare_answers(path, method, operation)
            add_links(operation)
    return document


def _without_head(route: APIRoute) -> APIRoute:
    if "HEAD" not in route.methods:
        return route
    documented = copy.copy(route)
    documented.methods = route.methods - {"HEAD"}
    return documented


def _bound_limit(operation: dict[str, Any], maximum: int | None) -> None:
    if maximum is None:
        return
    for parameter in operation.get("parameters", ()):
        if parameter["name"] == "limit":
            parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": maximum}


def _bound_settings(operation: dict[str, Any], bounds: dict[str, dict[str, Any]]) -> None:
    for parameter in operation.get("parameters", ()):
        bound = bounds.get(parameter["name"])
        if bound is not None:
            parameter["schema"] = {**parameter["schema"], **bound}
            parameter["schema"].pop("anyOf", None)


# pydantic writes a query integer's bounds (an Annotated int with a validator of its own,
# service.schemas.QueryInteger) under its own names; JSON Schema's are these.
_BOUND_KEYWORDS = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusiveMinimum",
    "lt": "exclusiveMaximum",
}


def _json_schema_bounds(schema: dict[str, Any]) -> None:
    for name, keyword in _BOUND_KEYWORDS.items():
        if name in schema:
            schema[keyword] = schema.pop(name)
    for variant in schema.get("anyOf", ()):
        _json_schema_bounds(variant)


def _error_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """What the route can answer besides success, from where it is and what it takes."""
    statuses = {500}
    if path.startswith("/v1/"):
        statuses |= {401, 403}
    if path.startswith("/v1/runs") or path == "/readyz":
        statuses.add(503)
    if "{run_id}" in path and method != "put":
        statuses.add(404)
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {400, 413, 415}
    if operation["operationId"] in _RUN_WRITES:
        statuses.add(409)
    return statuses


def _declare_answers(path: str, method: str, operation: dict[str, Any]) -> None:
    answers: dict[str, Any] = operation["responses"]
    for status in _error_statuses(path, method, operation) | {
        int(code) for code in answers if code[0] in "45"
    }:
        declared = answers.get(str(status), {})
        answers[str(status)] = {
            "description": declared.get("description") or _PROBLEM_DESCRIPTIONS[status],
            "headers": {**_REQUEST_ID_HEADER, **_PROBLEM_HEADERS.get(status, {})},
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": SCHEMAS_REF + "Problem"}}},
        }
    for code, answer in answers.items():
        if code[0] == "2":
            answer["headers"] = {**_REQUEST_ID_HEADER, **answer.get("headers", {})}
            if method == "put":
                answer["headers"]["Location"] = {
                    "description": "The run's URL",
                    "schema": {"type": "string"},
                }
