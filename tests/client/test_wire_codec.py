"""The client's float codec and the engine's are one description of the wire format.

Two copies on purpose: the client needs only httpx (it must not import the
service), and the engine (service.schedules) imports nothing outside the standard
library, so neither can own the other's. These tests hold them to the same
answers, both directions, on every edge value and on random nested data.
"""

import json
import math
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client import api as client_codec
from service.schedules import codec as engine_codec

EDGE_FLOATS = [
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    1e308,
    -1e308,
    sys.float_info.max,
    sys.float_info.min,
    5e-324,  # the smallest subnormal
    -5e-324,
    2.2250738585072e-308,  # a subnormal near the normal range
    0.1,
]
EDGE_VALUES: list[Any] = [
    *EDGE_FLOATS,
    0,
    -1,
    2**63,
    10**300,  # larger than any float
    -(10**400),
    True,
    False,
    None,
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "inf",
    "",
    "loss",
    [],
    {},
    (math.inf, 1),
    [math.nan, [math.inf, [-math.inf, {"best": math.inf}]]],
    {"best": math.inf, "metrics": {"loss": math.nan, "name": "NaN"}, "lrs": [0.1, -0.0]},
]

_SCALARS = (
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
    | st.integers()
    | st.booleans()
    | st.none()
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf", "Infinity ", "x"])
)
_NESTED = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=40,
)


def same(first: Any, second: Any) -> bool:
    """Equal value by value and type by type, NaN equal to NaN, -0.0 unequal to 0.0."""
    if type(first) is not type(second):
        return False
    if isinstance(first, float):
        if math.isnan(first):
            return math.isnan(second)
        return first == second and math.copysign(1.0, first) == math.copysign(1.0, second)
    if isinstance(first, list | tuple):
        return len(first) == len(second) and all(map(same, first, second))
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(same(first[k], second[k]) for k in first)
    return bool(first == second)


@pytest.mark.parametrize("value", EDGE_VALUES, ids=repr)
def test_both_codecs_encode_every_edge_value_alike(value: Any) -> None:
    assert same(client_codec.encode_floats(value), engine_codec.encode_floats(value))


@pytest.mark.parametrize("value", EDGE_VALUES, ids=repr)
def test_both_codecs_decode_every_edge_value_alike(value: Any) -> None:
    # Decoding takes what JSON gives: lists, not tuples.
    wire = json.loads(json.dumps(value))
    assert same(client_codec.decode_floats(wire), engine_codec.decode_floats(wire))


@pytest.mark.parametrize("value", EDGE_FLOATS, ids=repr)
def test_every_float_survives_strict_json_through_either_codec_and_back_through_the_other(
    value: float,
) -> None:
    for encode, decode in (
        (client_codec.encode_floats, engine_codec.decode_floats),
        (engine_codec.encode_floats, client_codec.decode_floats),
    ):
        wire = json.dumps(encode([value]), allow_nan=False)
        assert same(decode(json.loads(wire)), [value])


@settings(max_examples=400, derandomize=True, deadline=None)
@given(value=_NESTED)
def test_both_codecs_agree_on_random_nested_data_in_both_directions(value: Any) -> None:
    client_wire = client_codec.encode_floats(value)
    engine_wire = engine_codec.encode_floats(value)
    assert same(client_wire, engine_wire)
    # What they send is strict JSON either way.
    text = json.dumps(engine_wire, allow_nan=False)
    received = json.loads(text)
    assert same(client_codec.decode_floats(received), engine_codec.decode_floats(received))
