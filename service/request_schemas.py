"""The request bodies in ``/openapi.json`` as strict as the engine, so a fuzzer's are accepted.

pydantic documents a scheduler config as ``{"type": str, "params": object}`` and a
param group as any object; the engine refuses most of what that allows. Here the
config becomes a union discriminated on ``type``, one variant per type in
``service.schedules.registry`` with torch's parameters and the ranges the engine
enforces; param groups follow ``service.limits``; every stored string is declared
without NUL.
"""

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from service.config import Settings
from service.limits import (
    MAX_PARAM_GROUP_KEY_LENGTH,
    MAX_PARAM_GROUP_KEYS,
    MAX_PARAM_GROUP_LIST_LENGTH,
    MAX_PARAM_GROUP_STRING_LENGTH,
)
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
    # torch takes factor 0: it only fails once total_iters > 0 steps divide by it, which
    # the engine refuses at creation (a cross-field rule no bound can state).
    ("ConstantLR", "factor"): {"minimum": 0, "maximum": 1},
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
    ("hf:inverse_sqrt", "timescale"): {"minimum": 1},
    ("hf:reduce_lr_on_plateau", "factor"): {"exclusiveMaximum": 1},
    ("hf:reduce_lr_on_plateau", "mode"): {"enum": ["min", "max"]},
    ("hf:reduce_lr_on_plateau", "threshold_mode"): {"enum": ["rel", "abs"]},
    ("hf:warmup_stable_decay", "warmup_type"): {"enum": ["linear", "cosine", "1-sqrt"]},
    ("hf:warmup_stable_decay", "decay_type"): {"enum": ["linear", "cosine", "1-sqrt"]},
}
# Stored text holds no NUL (service.limits.check_text: PostgreSQL cannot store it).
STORABLE_TEXT = r"^[^\x00]*$"

_SCALAR_PARAM_VALUE: list[dict[str, Any]] = [
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
    {"type": "string", "maxLength": MAX_PARAM_GROUP_STRING_LENGTH, "pattern": STORABLE_TEXT},
]


def tighten_request_schemas(schemas: dict[str, Any], settings: Settings) -> None:
    """Replace the request schemas pydantic wrote in ``schemas`` (the document's components)."""
    schemas.update(scheduler_config_schemas())
    _tighten_param_groups(schemas, max_param_groups=settings.max_param_groups)
    _storable_text_only(schemas, max_metric_name_length=settings.max_metric_name_length)
    schemas["PreviewRequest"]["properties"]["steps"]["maximum"] = settings.max_preview_steps
    # Omitted, not null: the server refuses null (service.schemas._refuse_null).
    ranks = schemas["RunCreate"]["properties"]["ranks"]
    ranks.pop("anyOf")
    ranks["$ref"] = SCHEMAS_REF + "Ranks"
    ranks.pop("default", None)


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
        name = variant_name(type_name)
        variants[name] = _variant_schema(type_name, scheduler_class)
        if not _has_children(scheduler_class):
            leaves.append(name)
    mapping = {type_name: SCHEMAS_REF + variant_name(type_name) for type_name in SCHEDULER_TYPES}
    variants["SchedulerConfig"] = _union(list(variants), mapping)
    leaf_mapping = {key: ref for key, ref in mapping.items() if variant_name(key) in leaves}
    variants["ChildSchedulerConfig"] = _union(leaves, leaf_mapping)
    return variants


def variant_name(type_name: str) -> str:
    """``CosineAnnealingLRConfig``; ``hf:cosine_with_restarts`` → ``HfCosineWithRestartsConfig``.

    OpenAPI's component names allow letters, digits, ".", "-" and "_" only, and generated
    clients turn them into class names, so an ``hf:`` type is spelled in CamelCase.
    """
    if type_name.startswith("hf:"):
        words = type_name.removeprefix("hf:").split("_")
        type_name = "Hf" + "".join(word.capitalize() for word in words)
    return f"{type_name}Config"


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
        "title": variant_name(type_name),
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
