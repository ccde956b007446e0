"""lrkeeper's schedule engine: torch.optim.lr_scheduler (2.13.0), float for float, without torch.

Pure Python (stdlib only): nothing here imports torch, the web framework, the
database layer or pydantic — tests/schedules/test_purity.py enforces it.

The surface the service and the tests use (everything else is internal):

- ``build(config, param_groups) -> Scheduler``: validate (``InvalidConfig`` naming
  the field), then do what torch's constructor does; ``scheduler.outcome()`` is step 0.
- ``restore(config, param_groups, state) -> Scheduler``: continue, bit-exactly, a
  scheduler whose ``state()`` was saved (in this process or another).
- ``normalize_config(config) -> dict``: the validated config with every default
  filled in (and ``monitor`` for metric-driven types): what sameness compares.
- ``scheduler_types() -> list[dict]``: every type, its parameters, types, defaults.
- ``Scheduler.step(metrics) -> StepOutcome``; ``set_lr(lrs)``; ``lrs()``;
  ``momenta()``; ``state()``; ``uses_metric``; ``cycles_momentum``.
"""

from service.schedules.base import ScheduleEvent, Scheduler, StepOutcome
from service.schedules.errors import (
    ExpressionError,
    InvalidConfig,
    InvalidStepValue,
    MissingMetric,
    ScheduleError,
    StepPastEnd,
)
from service.schedules.registry import build, normalize_config, restore, scheduler_types

__all__ = [
    "ExpressionError",
    "InvalidConfig",
    "InvalidStepValue",
    "MissingMetric",
    "ScheduleError",
    "ScheduleEvent",
    "Scheduler",
    "StepOutcome",
    "StepPastEnd",
    "build",
    "normalize_config",
    "restore",
    "scheduler_types",
]
