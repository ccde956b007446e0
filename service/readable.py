"""What the pages show people instead of raw values: rounded lrs, "3 min ago", progress,
and a scheduler's state in words.

The API answers exact values (``0.010000000000000002``, ISO timestamps); a person
scanning a list of runs wants ``0.01`` and "2 h ago", with the exact value one
hover away (the templates put it in a ``title``). Everything here is a pure
function of a run's JSON answer, so the pages and their tests agree on it.
"""

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from service.schedules import registry
from service.schedules.base import Scheduler
from service.schedules.codec import decode_floats
from service.schedules.composite import SequentialLR
from service.schedules.cosine import CosineAnnealingWarmRestarts
from service.schedules.cyclic import CyclicLR, OneCycleLR
from service.schedules.plateau import ReduceLROnPlateau
from service.schedules.range_test import LRRangeTest

SIGNIFICANT_DIGITS = 4


def rounded(value: Any) -> str:
    """An lr for people: 4 significant digits, ``inf``/``nan`` spelled, ints as they are."""
    number = decode_floats(value)
    if isinstance(number, bool) or not isinstance(number, int | float):
        return str(number)
    if isinstance(number, int):
        return str(number)
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{SIGNIFICANT_DIGITS}g}"


def rounded_list(values: Sequence[Any]) -> str:
    return ", ".join(rounded(value) for value in values)


def relative_time(timestamp: str, now: datetime | None = None) -> str:
    """``just now``, ``42 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    moment = datetime.fromisoformat(timestamp)
    seconds = max(0.0, ((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 5:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def known_length(scheduler: Mapping[str, Any]) -> int | None:
    """The last step a schedule allows, when it has one (OneCycleLR, LRRangeTest)."""
    params = scheduler.get("params", {})
    if scheduler.get("type") == "OneCycleLR":
        total = params.get("total_steps")
        if total is None and params.get("epochs") and params.get("steps_per_epoch"):
            total = params["epochs"] * params["steps_per_epoch"]
        return int(total) if total is not None else None
    if scheduler.get("type") == "LRRangeTest":
        return int(params["num_steps"])
    return None


def progress(run: Mapping[str, Any]) -> str:
    """``412 / 1000`` where the schedule has a known length, else the step alone."""
    length = known_length(run["scheduler"])
    return f"{run['step']} / {length}" if length is not None else str(run["step"])


def state_in_words(run: Mapping[str, Any]) -> list[str]:
    """Where the schedule stands, one sentence per fact, from the run's stored state."""
    try:
        scheduler = registry.restore(run["scheduler"], run["param_groups"], run["state"])
    except Exception:  # a state this version cannot read still gets its page
        return []
    return _describe(scheduler, run["step"])


def _describe(scheduler: Scheduler, step: int) -> list[str]:
    if isinstance(scheduler, ReduceLROnPlateau):
        cooldown = scheduler.cooldown_counter
        return [
            f"best {scheduler.monitor} so far: {rounded(scheduler.best)} "
            f"(mode {scheduler.params.mode})",
            f"{scheduler.num_bad_epochs} bad epoch(s) in a row; patience {scheduler.patience}",
            f"cooldown: {cooldown} step(s) left" if cooldown else "not in a cooldown",
        ]
    if isinstance(scheduler, CosineAnnealingWarmRestarts):
        t_cur, t_i = scheduler.T_cur, scheduler.T_i
        return [f"T_cur {t_cur} of T_i {t_i}: the next warm restart in {t_i - t_cur} step(s)"]
    if isinstance(scheduler, CyclicLR):
        size = scheduler.total_size
        cycle = math.floor(1 + step / size)
        position = 1.0 + step / size - cycle
        phase = "rising" if position <= scheduler.step_ratio else "falling"
        return [f"cycle {cycle}, {phase}: {position:.0%} through a cycle of {size:g} steps"]
    if isinstance(scheduler, OneCycleLR):
        phases = scheduler.phases
        number = next(
            (index for index, phase in enumerate(phases, 1) if step <= phase.end_step),
            len(phases),
        )
        return [
            f"phase {number} of {len(phases)} ({'warm-up' if number == 1 else 'annealing'}), "
            f"step {step} of {scheduler.total_steps}"
        ]
    if isinstance(scheduler, LRRangeTest):
        stopped = " (stopped: the loss diverged)" if scheduler.stopped else ""
        return [f"step {step} of {scheduler.params.num_steps}{stopped}"]
    if isinstance(scheduler, SequentialLR):
        milestones = scheduler.milestones
        index = sum(1 for milestone in milestones if step >= milestone)
        child = type(scheduler.children[index]).__name__
        since = milestones[index - 1] if index else 0
        return [f"schedule {index + 1} of {len(milestones) + 1} ({child}) since step {since}"]
    return []
