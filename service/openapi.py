"""``/openapi.json`` as exact as the server: what a generated client and a fuzzer rely on.

FastAPI documents what the route signatures say. What they cannot say is added
here, once, when the document is first asked for (never on a request's path):

- one ``Problem`` schema, served as ``application/problem+json`` for every error
  status a route can answer: 401/403 (tokens) and 500 everywhere under /v1, 503
  wherever the database is read, 400/413/422 for bodies, 404 under a run;
- the headers: ``X-Request-ID`` on every answer, ``Retry-After`` on 503,
  ``WWW-Authenticate`` on 401, ``Location`` on a PUT;
- operationIds from the route functions' names (``put_run``, ``report_step``);
- request bodies as strict as the engine: the scheduler config as one variant per
  type in ``service.schedules.registry``, discriminated on ``type``, with torch's
  parameters; param groups as ``service.limits`` bounds them; paging ``limit``s
  between 1 and the app's settings; stored strings without NUL, expressions
  non-blank.

The 405 for a method a path lacks is not an operation's answer, so it is not
declared; its ``Allow`` names every method of the path (service.routing).

HEAD operations are left out: HEAD is answered wherever GET is (service.routing),
and a second operation per path would only add duplicate names to a client.
"""

import copy
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from service.config import Settings
from service.limits import (
    MAX_PARAM_GROUP_KEY_LENGTH,
    MAX_PARAM_GROUP_KEYS,
    MAX_PARAM_GROUP_LIST_LENGTH,
    MAX_PARAM_GROUP_STRING_LENGTH,
)
from service.problems import PROBLEM_MEDIA_TYPE
from service.schedules.registry import CHILDREN_FIELD, SCHEDULER_TYPES

SCHEMAS_REF = "#/components/schemas/"
# The parameters that hold expressions of ``epoch`` (service.schedules.expressions): a
# blank one is always refused, so the document asks for a non-blank, NUL-free string.
EXPRESSION_FIELDS = ("lr_lambda", "scale_fn")
EXPRESSION_TEXT = r"^[^\x00]*[^\x00\s][^\x00]*$"
# Ranges and choices the engine refuses outside of, as torch does (tests/contract
# proves each bound refused): without them, most configs a fuzzer draws are refused and
# it never gets as far as a run.
ENGINE_BOUNDS: dict[tuple[str, str], dict[str, Any]] = {
    ("ConstantLR", "factor"): {"exclusiveMinimum": 0, "maximum": 1},
    ("LinearLR", "start_factor"): {"exclusiveMinimum": 0, "maximum": 1},
    ("LinearLR", "end_factor"): {"minimum": 0, "maximum": 1},
    ("CosineAnnealingWarmRestarts", "T_0"): {"minimum": 1},
    ("CosineAnnealingWarmRestarts", "T_mult"): {"minimum": 1},
    ("OneCycleLR", "pct_start"): {"minimum": 0, "maximum": 1},
    ("OneCycleLR", "total_steps"): {"minimum": 1},
    ("OneCycleLR", "anneal_strategy"): {"enum": ["cos", "linear"]},
    ("ReduceLROnPlateau", "factor"): {"exclusiveMaximum": 1},
    ("ReduceLROnPlateau", "mode"): {"enum": ["min", "max"]},
    ("ReduceLROnPlateau", "threshold_mode"): {"enum": ["rel", "abs"]},
    ("LRRangeTest", "start_lr"): {"exclusiveMinimum": 0},
    ("LRRangeTest", "num_steps"): {"minimum": 1},
    ("LRRangeTest", "mode"): {"enum": ["exp", "linear"]},
}
# Stored text holds no NUL (service.limits.check_text: PostgreSQL cannot store it).
STORABLE_TEXT = r"^[^\x00]*$"

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
        "parameter": {"type": "string", "description": "schedule-failed"},
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
    422: "Invalid request; `errors` names each field",
    500: "The service failed; what failed is in its log",
    503: "The database did not answer; retry after `Retry-After` seconds",
}
# The writes on a run: each can meet a run whose state refuses it.
_RUN_WRITES = {"put_run", "update_run", "report_step", "set_lr", "rewind_run"}
_SCALAR_PARAM_VALUE: list[dict[str, Any]] = [
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
    {"type": "string", "maxLength": MAX_PARAM_GROUP_STRING_LENGTH, "pattern": STORABLE_TEXT},
]


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
    schemas.update(scheduler_config_schemas())
    _tighten_param_groups(schemas, max_param_groups=settings.max_param_groups)
    _storable_text_only(schemas, max_metric_name_length=settings.max_metric_name_length)
    paging_limits = {
        "list_runs": settings.max_list_limit,
        "get_history": settings.max_history_limit,
        "get_events": settings.max_history_limit,
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            route = next(r for r in routes if r.path == path and method.upper() in r.methods)
            operation["operationId"] = route.name
            _bound_limit(operation, paging_limits.get(route.name))
            _declare_answers(path, method, operation)
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
        statuses |= {400, 413}
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


# -- request schemas ----------------------------------------------------------------


def param_group_schema() -> dict[str, Any]:
    """One param group as the engine and service.limits accept it: an lr, then scalars."""
    number = {"type": "number"}
    return {
        "type": "object",
        "required": ["lr"],
        "maxProperties": MAX_PARAM_GROUP_KEYS,
        "propertyNames": {"maxLength": MAX_PARAM_GROUP_KEY_LENGTH, "pattern": STORABLE_TEXT},
        "properties": {
            "lr": {"type": "number", "minimum": 0},
            "momentum": number,
            "initial_lr": number,
            "betas": {"type": "array", "items": number, "minItems": 2, "maxItems": 2},
        },
        "additionalProperties": {
            "anyOf": [
                *_SCALAR_PARAM_VALUE,
                {
                    "type": "array",
                    "maxItems": MAX_PARAM_GROUP_LIST_LENGTH,
                    "items": {"anyOf": _SCALAR_PARAM_VALUE},
                },
            ]
        },
        "example": {"lr": 0.1, "momentum": 0.9},
    }


def _tighten_param_groups(schemas: dict[str, Any], *, max_param_groups: int) -> None:
    schemas["ParamGroup"] = param_group_schema()
    for name in ("RunCreate", "PreviewRequest"):
        groups = schemas[name]["properties"]["param_groups"]
        groups["items"] = {"$ref": SCHEMAS_REF + "ParamGroup"}
        groups["maxItems"] = max_param_groups


def _storable_text_only(schemas: dict[str, Any], *, max_metric_name_length: int) -> None:
    """Every string field the service stores, declared without NUL.

    Metadata stays a free-form object: saying "no NUL at any depth" takes a recursive
    union, which openapi-python-client cannot generate (it drops the operations).
    """
    step_report = schemas["StepReport"]["properties"]
    step_report["metrics"]["propertyNames"] = {
        "pattern": STORABLE_TEXT,
        "maxLength": max_metric_name_length,
    }
    for model, field in (("StepReport", "worker"), ("LrChange", "reason")):
        schemas[model]["properties"][field]["anyOf"][0]["pattern"] = STORABLE_TEXT


def scheduler_config_schemas() -> dict[str, dict[str, Any]]:
    """``SchedulerConfig`` as a union on ``type``, one variant per registered type.

    A composite's children are drawn from the non-composite variants: the server
    takes deeper nesting too, but a recursive schema sends fuzzers in circles.
    """
    variants: dict[str, dict[str, Any]] = {}
    leaves: list[str] = []
    for type_name, scheduler_class in SCHEDULER_TYPES.items():
        name = f"{type_name}Config"
        variants[name] = _variant_schema(type_name, scheduler_class)
        if not _has_children(scheduler_class):
            leaves.append(name)
    mapping = {type_name: SCHEMAS_REF + f"{type_name}Config" for type_name in SCHEDULER_TYPES}
    variants["SchedulerConfig"] = _union(list(variants), mapping)
    leaf_mapping = {key: ref for key, ref in mapping.items() if f"{key}Config" in leaves}
    variants["ChildSchedulerConfig"] = _union(leaves, leaf_mapping)
    return variants


def _union(names: list[str], mapping: dict[str, str]) -> dict[str, Any]:
    return {
        "oneOf": [{"$ref": SCHEMAS_REF + name} for name in names],
        "discriminator": {"propertyName": "type", "mapping": mapping},
        "example": {"type": "CosineAnnealingLR", "params": {"T_max": 100}},
    }


def _has_children(scheduler_class: type) -> bool:
    return any(
        field.name == CHILDREN_FIELD
        for field in dataclasses.fields(scheduler_class.Params)  # type: ignore[attr-defined]
    )


def _variant_schema(type_name: str, scheduler_class: type) -> dict[str, Any]:
    params_class = scheduler_class.Params  # type: ignore[attr-defined]
    hints = typing.get_type_hints(params_class)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in dataclasses.fields(params_class):
        if field.name == CHILDREN_FIELD:
            properties[field.name] = {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": SCHEMAS_REF + "ChildSchedulerConfig"},
            }
        elif field.name in EXPRESSION_FIELDS:
            properties[field.name] = _with_string_pattern(
                _annotation_schema(hints[field.name]), EXPRESSION_TEXT
            )
        else:
            properties[field.name] = _annotation_schema(hints[field.name])
        properties[field.name].update(ENGINE_BOUNDS.get((type_name, field.name), {}))
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    params: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        params["required"] = required
    variant: dict[str, Any] = {
        "title": f"{type_name}Config",
        "type": "object",
        "required": ["type", "params"] if required else ["type"],
        "properties": {"type": {"type": "string", "enum": [type_name]}, "params": params},
        "additionalProperties": False,
    }
    if getattr(scheduler_class, "default_monitor", None) is not None:
        variant["properties"]["monitor"] = {
            "type": "string",
            "minLength": 1,
            "pattern": STORABLE_TEXT,
            "description": f"default {scheduler_class.default_monitor!r}",  # type: ignore[attr-defined]
        }
    return variant


def _with_string_pattern(schema: dict[str, Any], pattern: str) -> dict[str, Any]:
    """``schema`` with ``pattern`` on every string it allows, through unions and lists."""
    if schema.get("type") == "string":
        return {**schema, "pattern": pattern}
    if "anyOf" in schema:
        return {"anyOf": [_with_string_pattern(option, pattern) for option in schema["anyOf"]]}
    if schema.get("type") == "array":
        return {**schema, "items": _with_string_pattern(schema["items"], pattern)}
    return schema


_SCALARS: dict[Any, Callable[[], dict[str, Any]]] = {
    bool: lambda: {"type": "boolean"},
    int: lambda: {"type": "integer"},
    float: lambda: {"type": "number"},
    str: lambda: {"type": "string", "pattern": STORABLE_TEXT},
    type(None): lambda: {"type": "null"},
    dict: lambda: {"type": "object"},
}


def _annotation_schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of a ``Params`` annotation, as registry._checker reads it."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return {"anyOf": [_annotation_schema(option) for option in typing.get_args(hint)]}
    if origin is Literal:
        return {"enum": list(typing.get_args(hint))}
    if origin is list:
        return {"type": "array", "items": _annotation_schema(typing.get_args(hint)[0])}
    if origin is dict:
        return _SCALARS[dict]()
    return _SCALARS[hint]()
