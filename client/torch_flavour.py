"""Makes a ``RemoteLRScheduler`` an instance of torch's scheduler classes when torch is loaded.

Frameworks decide what to do with a scheduler by ``isinstance`` against torch's
classes: Lightning refuses anything that is not a ``LRScheduler`` or
``ReduceLROnPlateau`` ("doesn't follow PyTorch's LRScheduler API") and hands the
monitored metric only to a ``ReduceLROnPlateau``; transformers' ``Trainer`` steps
a ``ReduceLROnPlateau`` with the evaluation metric instead of once per step;
Accelerate wraps only a ``LRScheduler``. So once the run's config is known, the
scheduler's class becomes a subclass of its own class and of the matching torch
class: ``ReduceLROnPlateau`` for metric-driven configs, ``LRScheduler`` for the rest.

torch's ``__init__`` never runs (it would wrap ``optimizer.step`` and compute a
schedule of its own); every method torch's base classes offer that reads or writes
values is the client's. torch is never imported here: the subclass is made only
when torch is already in ``sys.modules`` — and a torch optimizer, the only kind a
framework passes, means it is. Without torch the scheduler stays a plain
``RemoteLRScheduler`` and behaves the same.
"""

import functools
import sys
from collections.abc import Mapping
from typing import Any, TypeVar

# Configs whose step() takes the monitored metric: the keys of scheduler.py's
# _DEFAULT_MONITORS (a test keeps the two equal).
METRIC_DRIVEN_TYPES = frozenset({"ReduceLROnPlateau", "LRRangeTest", "hf:reduce_lr_on_plateau"})

SchedulerT = TypeVar("SchedulerT", bound=type)


def torch_flavour(cls: SchedulerT, config: Mapping[str, Any]) -> SchedulerT:
    """``cls``, or once torch is loaded, the subclass of ``cls`` that is also torch's
    class for ``config`` (made once per class and kind, so ``type()`` is stable)."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "optim"):
        return cls
    return _subclass(cls, str(config.get("type")) in METRIC_DRIVEN_TYPES)


@functools.cache
def _subclass(cls: SchedulerT, metric_driven: bool) -> SchedulerT:
    from torch.optim.lr_scheduler import (  # noqa: TID251 -- torch is already loaded
        LRScheduler,
        ReduceLROnPlateau,
    )

    torch_base = ReduceLROnPlateau if metric_driven else LRScheduler
    if issubclass(cls, torch_base):
        return cls
    namespace: dict[str, Any] = {
        "__doc__": cls.__doc__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        # torch counts step() calls here; Accelerate adds to it for accumulation
        # steps that skip the scheduler. The run's step is last_epoch, not this.
        "_step_count": 1,
        "get_lr": _get_lr,
    }
    # The client's class first, so its step/state_dict/get_last_lr win over torch's.
    subclass: SchedulerT = type(cls.__name__, (cls, torch_base), namespace)
    return subclass


def _get_lr(self: Any) -> list[float]:
    """The lrs the run holds now: torch's ``get_lr()`` computes them from the
    scheduler's own state, which here lives in the service."""
    lrs: list[float] = self.get_last_lr()
    return lrs
