"""One codec for non-finite floats in JSON data.

PostgreSQL's JSON types and strict JSON parsers reject ``NaN`` and
``Infinity``, yet a plateau's ``best`` starts at ``inf`` and a metric may be
NaN. Scheduler state and API answers therefore carry them as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"``; scheduler state holds no other
strings in numeric places, so decoding is unambiguous.

Both directions run on every step report (a state is decoded, stepped and
encoded again), so they dispatch on the exact type first — plain floats, lists
and dicts are nearly all there is — and fall back to ``isinstance`` for the rest.
"""

import math
from typing import Any

_TO_STRING = {math.inf: "Infinity", -math.inf: "-Infinity"}
_FROM_STRING = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    return _TO_STRING.get(value, value)


def decode_float(value: float | int | str) -> float | int:
    if isinstance(value, str):
        try:
            return _FROM_STRING[value]
        except KeyError:
            raise ValueError(f"not a number: {value!r}") from None
    return value


def encode_floats(value: Any) -> Any:
    """Replace every non-finite float inside lists/dicts by its string form.

    Tuples become lists, so that the result survives a JSON round trip unchanged.
    """
    kind = type(value)
    if kind is float:
        # x - x is 0.0 exactly for every finite x, NaN for ±inf and NaN.
        return value if value - value == 0.0 else encode_float(value)
    # Containers hold mostly finite floats (lrs, momenta, group values): those need no call.
    if kind is list or kind is tuple:
        return [
            item if type(item) is float and item - item == 0.0 else encode_floats(item)
            for item in value
        ]
    if kind is dict:
        return {
            key: item if type(item) is float and item - item == 0.0 else encode_floats(item)
            for key, item in value.items()
        }
    if kind is int or kind is str or kind is bool or value is None:
        return value
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, dict):
        return {key: encode_floats(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode_floats(item) for item in value]
    return value


def decode_floats(value: Any) -> Any:
    """Inverse of :func:`encode_floats` for data whose strings are all numbers.

    Every list and dict in the result is new, so the caller may mutate it freely.
    """
    kind = type(value)
    if kind is float or kind is int:
        return value
    # As in encode_floats: plain floats, the bulk of every container, need no call.
    if kind is dict:
        return {
            key: item if type(item) is float else decode_floats(item) for key, item in value.items()
        }
    if kind is list:
        return [item if type(item) is float else decode_floats(item) for item in value]
    if kind is str:
        return _FROM_STRING.get(value, value)
    if isinstance(value, str) and value in _FROM_STRING:
        return _FROM_STRING[value]
    if isinstance(value, dict):
        return {key: decode_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_floats(item) for item in value]
    return value
