"""One codec for non-finite floats in JSON data.

PostgreSQL's JSON types and strict JSON parsers reject ``NaN`` and
``Infinity``, yet a plateau's ``best`` starts at ``inf`` and a metric may be
NaN. Scheduler state and API answers therefore carry them as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"``; scheduler state holds no other
strings in numeric places, so decoding is unambiguous.
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
    """Replace every non-finite float inside lists/dicts by its string form."""
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, dict):
        return {key: encode_floats(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode_floats(item) for item in value]
    return value


def decode_floats(value: Any) -> Any:
    """Inverse of :func:`encode_floats` for data whose strings are all numbers."""
    if isinstance(value, str) and value in _FROM_STRING:
        return _FROM_STRING[value]
    if isinstance(value, dict):
        return {key: decode_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_floats(item) for item in value]
    return value
