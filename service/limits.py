"""What a request body may hold: bounds checked before pydantic walks the body.

A JSON body within ``LRKEEPER_MAX_BODY_BYTES`` (service.edge) can still be a
300,000-key metrics object or a megabyte of metadata. The checks here run as
``mode="before"`` validators, on the parsed JSON, ahead of the per-item
validation: the count of metrics or param groups is read with one ``len`` before
any item is validated, and every other check walks at most that many items.

Pydantic validators cannot see the request, so the app's limits reach them
through a contextvar that service.edge sets for each request (every app its own
limits; outside a request, the defaults). A refusal is a pydantic error of type
``limit_exceeded`` whose ``ctx`` names the setting and its value; service.problems
copies them into the 422 as ``limit`` and ``max``.

The shape of a param group is bounded by constants, not settings: the engine
reads ``lr``, ``momentum``, ``betas`` and ``initial_lr``, and an optimizer's other
hyperparameters are scalars or short tuples, so no deployment needs more room.
"""

import json
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_PARAM_GROUP_KEYS = 32
MAX_PARAM_GROUP_KEY_LENGTH = 64
MAX_PARAM_GROUP_STRING_LENGTH = 128
# betas has two items; no optimizer hyperparameter we know of has more than a handful.
MAX_PARAM_GROUP_LIST_LENGTH = 16
# The most LRKEEPER_MAX_JSON_DEPTH may be: everything that walks a body recurses per level
# (json, check_metadata's json.dumps, the float codec at two frames a level), and
# 256 levels keep all of them far below Python's recursion limit of 1000.
MAX_JSON_DEPTH_CEILING = 256

LIMIT_EXCEEDED = "limit_exceeded"
UNSTORABLE_TEXT = "unstorable_text"
# Neither driver can encode an unpaired surrogate (JSON's "\ud800" escape) to UTF-8, so
# such text is refused on both backends: the same 422 on either instead of a 500. U+0000,
# which PostgreSQL cannot store either, is refused earlier, in any string of any body, by
# one search of the raw bytes (service.json_body), so it is not looked for again here.


@dataclass(frozen=True)
class PayloadLimits:
    """The settings-dependent bounds (their ``LRKEEPER_*`` names are the fields', upper-cased)."""

    max_metrics: int = 64
    max_metric_name_length: int = 128
    max_metadata_bytes: int = 64 * 1024
    max_param_groups: int = 64
    # Levels of arrays and objects in a JSON body, checked on its bytes (service.json_body).
    max_json_depth: int = 32


@dataclass(frozen=True)
class CatchUpLimit:
    """How far one step report may move a run: in steps, and in lr values computed and
    stored (steps × param groups), the work its transaction holds the run's lock for."""

    steps: int
    values: int


DEFAULT_PAYLOAD_LIMITS = PayloadLimits()
current_payload_limits: ContextVar[PayloadLimits] = ContextVar(
    "lrkeeper_payload_limits", default=DEFAULT_PAYLOAD_LIMITS
)


def _unstorable() -> PydanticCustomError:
    return PydanticCustomError(
        UNSTORABLE_TEXT,
        "text may not hold an unpaired surrogate: the database cannot store it",
    )


def _encodes(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def is_storable(text: str) -> bool:
    """Text either database stores as it is: valid UTF-8 once encoded."""
    return _encodes(text)


def _is_storable_json(serialized: str) -> bool:
    """``serialized`` is ``json.dumps(..., ensure_ascii=False)`` of what is stored."""
    return _encodes(serialized)


def check_text(value: object) -> object:
    """A string field that is stored."""
    if isinstance(value, str) and not is_storable(value):
        raise _unstorable()
    return value


def check_json_text(value: object) -> object:
    """A JSON value that is stored as it came (a scheduler's params): every string storable."""
    if isinstance(value, dict | list) and not _is_storable_json(
        json.dumps(value, ensure_ascii=False)
    ):
        raise _unstorable()
    return value


def _exceeded(limit: str, maximum: int, message: str) -> PydanticCustomError:
    # The messages hold numbers only, never the client's text: pydantic would read any
    # braces in them as placeholders for ctx.
    return PydanticCustomError(LIMIT_EXCEEDED, message, {"limit": limit, "max": maximum})


def _refuse_at(loc: Sequence[str | int], error: PydanticCustomError, value: object) -> None:
    """Raise ``error`` at ``loc`` below the field being validated (pydantic prefixes the field)."""
    raise ValidationError.from_exception_data(
        "limits", [InitErrorDetails(type=error, loc=tuple(loc), input=value)]
    )


def check_metrics(metrics: object) -> object:
    """At most ``max_metrics`` names, each at most ``max_metric_name_length`` characters."""
    if not isinstance(metrics, dict):
        return metrics  # pydantic refuses it, naming the field
    limits = current_payload_limits.get()
    if len(metrics) > limits.max_metrics:
        raise _exceeded(
            "max_metrics",
            limits.max_metrics,
            f"at most {limits.max_metrics} metrics per step report "
            f"(LRKEEPER_MAX_METRICS), got {len(metrics)}",
        )
    for name in metrics:
        if isinstance(name, str) and not is_storable(name):
            _refuse_at([name], _unstorable(), name)
        if isinstance(name, str) and len(name) > limits.max_metric_name_length:
            error = _exceeded(
                "max_metric_name_length",
                limits.max_metric_name_length,
                f"a metric name may have at most {limits.max_metric_name_length} characters "
                f"(LRKEEPER_MAX_METRIC_NAME_LENGTH), this one has {len(name)}",
            )
            _refuse_at([name], error, len(name))
    return metrics


def check_metadata(metadata: object) -> object:
    """At most ``max_metadata_bytes`` of JSON (as stored: compact, UTF-8)."""
    if not isinstance(metadata, dict):
        return metadata
    limits = current_payload_limits.get()
    # The body limit bounds this walk; it is the same measure as the stored column's.
    stored = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
    if not _is_storable_json(stored):
        raise _unstorable()
    size = len(stored.encode())
    if size > limits.max_metadata_bytes:
        raise _exceeded(
            "max_metadata_bytes",
            limits.max_metadata_bytes,
            f"metadata may take at most {limits.max_metadata_bytes} bytes of JSON "
            f"(LRKEEPER_MAX_METADATA_BYTES), this takes {size}",
        )
    return metadata


def check_param_groups(param_groups: object) -> object:
    """At most ``max_param_groups`` groups, each a small flat object of scalars or short lists."""
    if not isinstance(param_groups, list):
        return param_groups
    limits = current_payload_limits.get()
    if len(param_groups) > limits.max_param_groups:
        raise _exceeded(
            "max_param_groups",
            limits.max_param_groups,
            f"at most {limits.max_param_groups} param groups are allowed "
            f"(LRKEEPER_MAX_PARAM_GROUPS), got {len(param_groups)}",
        )
    for index, group in enumerate(param_groups):
        if isinstance(group, dict):
            _check_param_group(index, group)
    return param_groups


def _check_param_group(index: int, group: dict[str, Any]) -> None:
    if len(group) > MAX_PARAM_GROUP_KEYS:
        error = _exceeded(
            "max_param_group_keys",
            MAX_PARAM_GROUP_KEYS,
            f"a param group may have at most {MAX_PARAM_GROUP_KEYS} keys, this has {len(group)}",
        )
        _refuse_at([index], error, len(group))
    for key, value in group.items():
        if not is_storable(key):
            _refuse_at([index, key], _unstorable(), key)
        if len(key) > MAX_PARAM_GROUP_KEY_LENGTH:
            error = _exceeded(
                "max_param_group_key_length",
                MAX_PARAM_GROUP_KEY_LENGTH,
                f"a param group key may have at most {MAX_PARAM_GROUP_KEY_LENGTH} characters, "
                f"this one has {len(key)}",
            )
            _refuse_at([index, key], error, len(key))
        problem = _param_value_problem(value)
        if problem is not None:
            _refuse_at([index, key], problem, value)


def _param_value_problem(value: object) -> PydanticCustomError | None:
    """Why a param group value is refused; None when it is a scalar or a short flat list."""
    if isinstance(value, list):
        if len(value) > MAX_PARAM_GROUP_LIST_LENGTH:
            return _exceeded(
                "max_param_group_list_length",
                MAX_PARAM_GROUP_LIST_LENGTH,
                f"a list in a param group may have at most {MAX_PARAM_GROUP_LIST_LENGTH} items, "
                f"this one has {len(value)}",
            )
        for item in value:
            if isinstance(item, list | dict):
                return PydanticCustomError(
                    "param_group_nesting", "a list in a param group holds numbers, not containers"
                )
            item_problem = _param_value_problem(item)
            if item_problem is not None:
                return item_problem
        return None
    if isinstance(value, dict):
        return PydanticCustomError(
            "param_group_nesting",
            "a param group value is a number, a bool, null, a short string or a short list",
        )
    if isinstance(value, str) and not is_storable(value):
        return _unstorable()
    if isinstance(value, str) and len(value) > MAX_PARAM_GROUP_STRING_LENGTH:
        return _exceeded(
            "max_param_group_string_length",
            MAX_PARAM_GROUP_STRING_LENGTH,
            f"a string in a param group may have at most {MAX_PARAM_GROUP_STRING_LENGTH} "
            f"characters, this one has {len(value)}",
        )
    return None
