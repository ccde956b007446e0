"""service.json_body: the depth scan on raw bytes agrees with the parsed value, and refusals
name what is wrong. Pure functions, no server (tests/service/test_hostile_input.py sends
the same bodies to a live one)."""

import json
from typing import Any

import pytest
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st

from service.json_body import (
    JsonBodyRoute,
    nested_deeper_than,
    nesting_depth,
    parse_json_body,
    require_json_media_type,
)
from service.main import create_app
from service.problems import InvalidJson, InvalidRequest, UnsupportedMediaType

# Strings full of what the scan must not count: brackets, quotes, backslashes.
_TRICKY_TEXT = st.text(alphabet='[]{}"\\ a\n\u00e9\U0001f600', max_size=12)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_TRICKY_TEXT, children, max_size=4)
    ),
    max_leaves=60,
)


def depth_of(value: Any) -> int:
    """The reference: levels of lists and dicts, by walking the parsed value."""
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


def nested(levels: int, kind: str = "object") -> bytes:
    if kind == "object":
        return ('{"a":' * levels + "1" + "}" * levels).encode()
    return ("[" * levels + "]" * levels).encode()


@settings(max_examples=300, derandomize=True, deadline=None)
@given(value=_JSON_VALUES, indent=st.sampled_from([None, 1]))
def test_the_byte_scan_measures_the_depth_of_any_json_value_exactly(
    value: Any, indent: int | None
) -> None:
    body = json.dumps(value, indent=indent, ensure_ascii=False).encode()
    assert nesting_depth(body) == depth_of(value)
    for limit in (depth_of(value) - 1, depth_of(value)):
        assert nested_deeper_than(body, limit) == (depth_of(value) > limit)


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b'{"a": "[[[[{{{{", "b": [[1]]}', 3),
        (b'["\\"[[[", [["\\\\"]]]', 3),
        (b"[" * 5000, 5000),  # never closed: a parser recurses into every one
        (b"]]]]", 0),
        (b"[]" * 1000, 1),
        (b"", 0),
    ],
)
def test_brackets_in_strings_do_not_count_and_unclosed_ones_do(body: bytes, depth: int) -> None:
    assert nesting_depth(body) == depth


@pytest.mark.parametrize("kind", ["object", "array"])
def test_a_body_one_level_past_the_limit_is_invalid_json_naming_the_limit(kind: str) -> None:
    assert parse_json_body(nested(32, kind), 32) is not None
    with pytest.raises(InvalidJson) as refused:
        parse_json_body(nested(33, kind), 32)
    assert refused.value.detail == (
        "the request body is nested deeper than LRKEEPER_MAX_JSON_DEPTH (32)"
    )
    assert refused.value.extensions == {"limit": "max_json_depth", "max": 32}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{bad", "not valid JSON: Expecting property name enclosed in double quotes"),
        (b'{"a": "\xff"}', "not UTF-8: byte 0xff at position 7"),
        (b'{"a": "\xed\xa0\x80"}', "not UTF-8: byte 0xed at position 7"),
        (b"\xef\xbb\xbf{}", "not valid JSON: Unexpected UTF-8 BOM"),
        (b"[" + b"9" * 5000 + b"]", "not valid JSON: Exceeds the limit (4300 digits)"),
        (b"{} {}", "not valid JSON: Extra data"),
    ],
)
def test_bytes_that_are_not_json_are_invalid_json_saying_what_is_wrong(
    body: bytes, detail: str
) -> None:
    with pytest.raises(InvalidJson) as refused:
        parse_json_body(body, 32)
    assert detail in refused.value.detail
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"metadata": {"notes": ["ok", "a\\u0000b"]}}', ["body", "metadata", "notes", 1]),
        (b'{"metrics": {"loss\\u0000": 1}}', ["body", "metrics", "loss\x00"]),
        (b'{"worker": "\\\\\\u0000"}', ["body", "worker"]),  # an escaped backslash, then U+0000
    ],
)
def test_a_string_holding_u0000_is_refused_naming_where(body: bytes, loc: list[Any]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_json_body(body, 32)
    assert refused.value.extensions["errors"][0]["loc"] == loc
    assert "U+0000" in refused.value.detail


def test_the_text_backslash_u0000_is_an_ordinary_string() -> None:
    assert parse_json_body(b'{"notes": "\\\\u0000"}', 32) == {"notes": "\\u0000"}


def test_the_bare_non_finite_tokens_python_writes_are_accepted() -> None:
    parsed = parse_json_body(b'{"loss": NaN, "best": Infinity, "worst": -Infinity}', 32)
    assert parsed["best"] == float("inf") and parsed["worst"] == float("-inf")
    assert parsed["loss"] != parsed["loss"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ],
)
def test_json_media_types_are_accepted(content_type: str) -> None:
    require_json_media_type(content_type)


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        (None, "no Content-Type"),
        ("text/plain", "Content-Type text/plain"),
        ("application/x-www-form-urlencoded", "Content-Type application/x-www-form-urlencoded"),
        ("application/jsonp", "Content-Type application/jsonp"),
    ],
)
def test_other_media_types_are_unsupported_naming_what_came(
    content_type: str | None, named: str
) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        require_json_media_type(content_type)
    assert refused.value.detail.endswith(named)
    assert refused.value.status == 415


def test_every_api_route_with_a_json_body_reads_it_through_json_body() -> None:
    app = create_app()
    body_routes = [
        route
        for route in app.routes
        if isinstance(route, APIRoute) and route.body_field is not None and route.include_in_schema
    ]
    assert {route.path for route in body_routes} >= {"/v1/runs/{run_id}", "/v1/preview"}
    assert [route.path for route in body_routes if not isinstance(route, JsonBodyRoute)] == []
