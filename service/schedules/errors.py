"""The engine's error family.

Every refusal names the place that caused it, as a path from a notional root
``{"scheduler": config, "param_groups": groups}`` — ``("scheduler", "params",
"step_size")``, ``("scheduler", "params", "schedulers", 1, "params", "T_0")``,
``("param_groups", 0, "lr")`` — so the service can turn it into a 422 whose
``loc`` points at the field without guessing from a message.
"""

from collections.abc import Sequence

Loc = tuple[str | int, ...]


class ScheduleError(Exception):
    """Base of every error the engine raises on purpose."""


class InvalidConfig(ScheduleError):
    """A scheduler config (or its param groups) that torch refuses, or that could only crash later.

    ``loc`` starts with ``"scheduler"`` or ``"param_groups"`` (see the module docstring).
    """

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        self.loc: Loc = tuple(loc)
        self.message = message
        super().__init__(f"{'.'.join(str(part) for part in self.loc)}: {message}")

    def nested(self, *prefix: str | int) -> "InvalidConfig":
        """The same error seen from an enclosing config (a composite's child list)."""
        return InvalidConfig((*prefix, *self.loc), self.message)


class StepPastEnd(ScheduleError):
    """A schedule with a fixed length (OneCycleLR, LRRangeTest) was stepped beyond it."""

    def __init__(self, step: int, total_steps: int, message: str) -> None:
        self.step = step
        self.total_steps = total_steps
        super().__init__(message)


class MissingMetric(ScheduleError):
    """A metric-driven scheduler was stepped without the metric it monitors."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"metric {name!r} is required for this step")


class InvalidStepValue(ScheduleError):
    """A step would produce a value torch itself would crash on (e.g. 0.0 ** negative power).

    ``reason`` says what failed ("division by zero"); ``parameter`` names the config
    value that failed when one did (an ``lr_lambda`` expression), so the message reads
    ``lr_lambda failed at step 3: division by zero`` and names the step once.
    """

    def __init__(self, step: int, reason: str, parameter: str | None = None) -> None:
        self.step = step
        self.reason = reason
        self.parameter = parameter
        where = f"{parameter} failed at step {step}" if parameter else f"step {step} failed"
        super().__init__(f"{where}: {reason}")


class ExpressionError(ScheduleError):
    """A compiled ``lr_lambda`` / ``scale_fn`` expression failed while being evaluated.

    Raised by the callable (division by zero, overflow, a math domain error) with the
    parameter it was compiled for (``lr_lambda``, ``lr_lambda[1]``, ``scale_fn``); the
    scheduler that called it re-raises it as :class:`InvalidStepValue` with the step.
    """

    def __init__(self, reason: str, parameter: str | None = None) -> None:
        self.reason = reason
        self.parameter = parameter
        super().__init__(reason)
