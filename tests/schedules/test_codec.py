"""The non-finite float codec: strict-JSON-safe both ways, for every shape a state or answer has."""

import json
import math
from collections import OrderedDict
from typing import Any

import pytest

from service.schedules.codec import decode_floats, encode_floats

NAN, INF = math.nan, math.inf


class Loss(float):
    """A float subclass, as a numpy-like scalar would be: encoded by value, not by type."""


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0.5, 0.5),
        (INF, "Infinity"),
        (-INF, "-Infinity"),
        (NAN, "NaN"),
        ([0.1, INF, -0.0, 3], [0.1, "Infinity", -0.0, 3]),
        ((0.9, -INF), [0.9, "-Infinity"]),
        (
            {"best": INF, "lr": 0.1, "stopped": True},
            {"best": "Infinity", "lr": 0.1, "stopped": True},
        ),
        ([{"lr": 0.1, "betas": (0.9, 0.999)}], [{"lr": 0.1, "betas": [0.9, 0.999]}]),
        (OrderedDict(best=-INF), {"best": "-Infinity"}),
        (Loss(INF), "Infinity"),
        ([Loss(0.25), None, "min"], [0.25, None, "min"]),
    ],
    ids=repr,
)
def test_encoding_replaces_only_non_finite_floats(value: Any, encoded: Any) -> None:
    assert json.dumps(encode_floats(value), allow_nan=False) == json.dumps(encoded)


def test_decoding_inverts_encoding_through_strict_json() -> None:
    state = {
        "best": INF,
        "num_bad_epochs": 2,
        "stopped": False,
        "param_groups": [{"lr": 0.1, "betas": [0.9, 0.999]}, {"lr": -INF, "momentum": 0.9}],
    }
    decoded = decode_floats(json.loads(json.dumps(encode_floats(state), allow_nan=False)))
    assert decoded == state
    assert math.isnan(decode_floats(encode_floats(NAN)))


def test_decoding_gives_fresh_containers() -> None:
    stored = {"param_groups": [{"lr": 0.1, "betas": [0.9, 0.999]}]}
    decoded = decode_floats(stored)
    decoded["param_groups"][0]["betas"][0] = 0.5
    decoded["param_groups"][0]["lr"] = 1.0
    assert stored == {"param_groups": [{"lr": 0.1, "betas": [0.9, 0.999]}]}


def test_values_nested_as_deep_as_any_request_body_may_be_round_trip() -> None:
    # The codec recurses per level, two frames a level (the comprehension's own) on 3.11.
    # Bodies are at most MAX_JSON_DEPTH_CEILING deep (service.json_body); what the service
    # encodes is never deeper than a body plus a few levels (a run answer wraps its config,
    # a composite's state is no deeper than its config), so the ceiling plus 16 must fit.
    from service.limits import MAX_JSON_DEPTH_CEILING

    value: Any = [INF]
    for level in range(MAX_JSON_DEPTH_CEILING + 16):
        value = {"child": value, "best": -INF} if level % 2 else [value, NAN]
    encoded = encode_floats(value)
    text = json.dumps(encoded, allow_nan=False)
    assert json.dumps(encode_floats(decode_floats(json.loads(text))), allow_nan=False) == text
