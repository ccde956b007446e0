"""A run's schedule in words for its page: how far it has gone and where it stands.

Read from the run's stored state through the engine (service.schedules), so the
words follow the same numbers the schedule steps with.
"""

import math
from collections.abc import Mapping
from typing import Any

from service.readable import rounded
from service.schedules import registry
from service.schedules.base import Scheduler
from service.schedules.composite import SequentialLR
from service.schedules.cosine import CosineAnnealingWarmRestarts
from service.schedules.cyclic import CyclicLR, OneCycleLR
from service.schedules.plateau import ReduceLROnPlateau
from service.schedules.range_test import LRRangeTest


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
    return [*_describe(scheduler, run["step"]), *_waiting_in_words(run.get("waiting"))]


def _waiting_in_words(waiting: Mapping[str, Any] | None) -> list[str]:
    if waiting is None:
        return []
    missing = ", ".join(str(rank) for rank in waiting["missing"])
    reported = len(waiting["reported"])
    return [
        f"step {waiting['step']} waits for rank(s) {missing} ({reported} of "
        f"{reported + len(waiting['missing'])} reported); the ranks present decide it at "
        f"{waiting['decided_by']}"
    ]


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
