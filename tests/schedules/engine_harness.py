"""Building and restoring one engine class directly, the way the per-class torch tests need."""

import copy
import json
from typing import Any

from service.schedules import registry
from service.schedules.base import Group, Scheduler


def build(scheduler_class: type[Scheduler], groups: list[Group], **params: Any) -> Any:
    """The class's constructor plus torch's construction side effects, bypassing the registry."""
    scheduler = scheduler_class(groups, scheduler_class.Params(**params))  # type: ignore[call-arg, attr-defined]
    scheduler.start()
    return scheduler


def restore(
    scheduler_class: type[Scheduler], config_groups: list[Group], saved: Any, **params: Any
) -> Any:
    """What the service does with a stored run: registry.restore from config, groups and state."""
    state = json.loads(json.dumps(saved, allow_nan=False))
    config = {"type": scheduler_class.type_name, "params": params}
    return registry.restore(config, copy.deepcopy(config_groups), state)
