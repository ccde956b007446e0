"""Values for people instead of raw ones: ``0.01`` and "2 h ago".

The API answers exact values (``0.010000000000000002``, ISO timestamps); a person
scanning a list of runs wants the short form, with the exact value one hover away
(the pages put it in a ``title``). The pages and the ``lrkeeper`` command both use
these, so the two say the same; stdlib only, as the command runs on the client's
base install.
"""

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

SIGNIFICANT_DIGITS = 4
# How the wire spells the floats JSON has no literal for (service.schedules.codec).
NON_FINITE = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}


def rounded(value: Any) -> str:
    """An lr for people: 4 significant digits, ``inf``/``nan`` spelled, ints as they are."""
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{SIGNIFICANT_DIGITS}g}"


def rounded_list(values: Sequence[Any], separator: str = ", ") -> str:
    return separator.join(rounded(value) for value in values)


def relative_time(moment: str | datetime | None, now: datetime | None = None) -> str:
    """``42 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago`` (ISO text or a datetime)."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    seconds = max(0.0, ((now or datetime.now(UTC)) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"
