"""Cyclical schedules that also drive momentum (torch's §12 CyclicLR and §13 OneCycleLR).

Both are pure functions of the step (no history), both overwrite the lr at
construction, and both cycle momentum inversely to the lr by default: SGD-like
groups get ``momentum``, Adam-like groups (those holding ``betas``) get
``betas[0]``, written back as a list. Their values are computed in full before
any group is written, so a step that fails leaves the schedule as it was.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.schedules.base import Group, Scheduler
from service.schedules.errors import (
    ExpressionError,
    InvalidConfig,
    InvalidStepValue,
    StepPastEnd,
)
from service.schedules.expressions import compile_expression

_NO_MOMENTUM = "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"


def per_group(name: str, value: Any, groups: Sequence[Group]) -> list[Any]:
    """torch's ``_format_param``: one value for every group, or a list with one per group."""
    if isinstance(value, list):
        if len(value) != len(groups):
            raise InvalidConfig(
                ("params", name),
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(value)} values, param_groups has {len(groups)}.",
            )
        return list(value)
    return [value] * len(groups)


def require_momentum_support(groups: Sequence[Group]) -> None:
    """torch asks the optimizer's defaults; a group without either key stands for that."""
    for index, group in enumerate(groups):
        if "momentum" not in group and "betas" not in group:
            raise InvalidConfig(("param_groups", index, "momentum"), _NO_MOMENTUM)


def write_momentum(group: Group, momentum: float) -> None:
    if "betas" in group:
        group["betas"] = [momentum, *group["betas"][1:]]
    else:
        group["momentum"] = momentum


def write_momenta(groups: Sequence[Group], momenta: Sequence[float]) -> None:
    for index, group in enumerate(groups):
        if "betas" in group:
            group["betas"] = [momenta[index], *group["betas"][1:]]
        else:
            group["momentum"] = momenta[index]


def _unit_scale(_: int) -> float:
    """torch's triangular scale_fn."""
    return 1.0


def _halving_scale(cycle: int) -> float:
    """torch's triangular2 scale_fn: the amplitude halves every cycle."""
    return 1 / (2.0 ** (cycle - 1))


class CyclicLR(Scheduler):
    """A triangle between base_lr and max_lr (scaled per cycle or per step); momentum mirrors it.

    base 0.01, max 0.1, step_size_up 2 (triangular): 0.01, 0.055, 0.1, 0.055, 0.01, …;
    lr = base + (max - base)·s·f with s the triangle's height and f the scale function,
    momentum = max_m - (max_m - base_m)·s·f.
    """

    type_name = "CyclicLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        base_lr: float | list[float]
        max_lr: float | list[float]
        step_size_up: int = 2000
        step_size_down: int | None = None
        mode: str = "triangular"
        gamma: float = 1.0
        scale_fn: str | None = None
        scale_mode: str = "cycle"
        cycle_momentum: bool = True
        base_momentum: float | list[float] = 0.8
        max_momentum: float | list[float] = 0.9

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        self.params = params
        self.base_lr_values = per_group("base_lr", params.base_lr, groups)
        self.max_lrs = per_group("max_lr", params.max_lr, groups)
        step_size_up = float(params.step_size_up)
        step_size_down = (
            float(params.step_size_down) if params.step_size_down is not None else step_size_up
        )
        self.total_size = step_size_up + step_size_down
        if self.total_size == 0:
            field = "step_size_up" if params.step_size_down is None else "step_size_down"
            raise InvalidConfig(
                ("params", field),
                "step_size_up + step_size_down must not be 0: torch fails with "
                "'float division by zero' at construction",
            )
        self.step_ratio = step_size_up / self.total_size
        if (
            params.mode not in ("triangular", "triangular2", "exp_range")
            and params.scale_fn is None
        ):
            raise InvalidConfig(("params", "mode"), "mode is invalid and scale_fn is None")
        self.custom_scale: Callable[[int | float], int | float] | None = None
        self.scale: Callable[[int], int | float]
        if params.scale_fn is not None:
            self.custom_scale = compile_expression(params.scale_fn, "x", ("params", "scale_fn"))
            self.scale = self.custom_scale
            self.scale_mode = params.scale_mode
        else:
            # torch forces the mode's own scale_mode and ignores the argument.
            self.scale_mode = "iterations" if params.mode == "exp_range" else "cycle"
            self.scale = _builtin_scale(params.mode, params.gamma)
        self.scales_by_cycle = self.scale_mode == "cycle"
        self.cycles_momentum = params.cycle_momentum
        if params.cycle_momentum:
            require_momentum_support(groups)
            self.base_momentums = per_group("base_momentum", params.base_momentum, groups)
            self.max_momentums = per_group("max_momentum", params.max_momentum, groups)
        if step_size_up == 0:
            raise InvalidConfig(
                ("params", "step_size_up"),
                "step_size_up must not be 0: torch fails with 'float division by zero' "
                "at construction",
            )
        if self.custom_scale is not None:
            self._refuse_failing_construction_step()

    def _refuse_failing_construction_step(self) -> None:
        """torch evaluates scale_fn in its constructor: a crash there is a config error."""
        try:
            self.scale(1 if self.scales_by_cycle else 0)
        except ExpressionError as failure:
            raise InvalidConfig(
                ("params", "scale_fn"), f"scale_fn fails at construction: {failure}"
            ) from None

    def start(self) -> None:
        """lr := base_lr and momentum := max_momentum, then torch's base construction.

        torch re-sets ``base_lrs`` to base_lr only after its construction step, so that
        step runs on the groups' ``initial_lr`` (different when an earlier scheduler fixed it).
        """
        for group, lr in zip(self.groups, self.base_lr_values, strict=True):
            group["lr"] = lr
        if self.cycles_momentum:
            for group, max_momentum, base_momentum in zip(
                self.groups, self.max_momentums, self.base_momentums, strict=True
            ):
                write_momentum(group, max_momentum)
                group["max_momentum"] = max_momentum
                group["base_momentum"] = base_momentum
        super().start()
        self.base_lrs = list(self.base_lr_values)

    def get_lr(self) -> list[float]:
        """The lrs at ``last_epoch``; writes the momenta too, as torch's ``get_lr`` does."""
        epoch = self.last_epoch
        try:
            cycle = math.floor(1 + epoch / self.total_size)
            x = 1.0 + epoch / self.total_size - cycle
            if x <= self.step_ratio:
                scale_factor = x / self.step_ratio
            else:
                scale_factor = (x - 1) / (self.step_ratio - 1)
            scale = self.scale(cycle if self.scales_by_cycle else epoch)
            max_lrs = self.max_lrs
            lrs = [
                base + (max_lrs[index] - base) * scale_factor * scale
                for index, base in enumerate(self.base_lrs)
            ]
            if self.cycles_momentum:
                base_momentums = self.base_momentums
                momenta = [
                    top - (top - base_momentums[index]) * scale_factor * scale
                    for index, top in enumerate(self.max_momentums)
                ]
        except ExpressionError as failure:
            raise InvalidStepValue(epoch, failure.reason, failure.parameter) from None
        except (OverflowError, ZeroDivisionError) as failure:
            raise InvalidStepValue(epoch, f"torch fails here ({failure})") from None
        if self.cycles_momentum:
            write_momenta(self.groups, momenta)
        return lrs


def _builtin_scale(mode: str, gamma: float) -> Callable[[int], int | float]:
    """torch's scale_fn for a named mode (exp_range's is called with the step, not the cycle)."""
    if mode == "triangular":
        return _unit_scale
    if mode == "triangular2":
        return _halving_scale
    return lambda iteration: gamma**iteration


@dataclass(frozen=True)
class _Phase:
    """One stretch of the 1cycle schedule: the group keys it anneals between, up to end_step."""

    end_step: float
    start_lr: str
    end_lr: str
    start_momentum: str
    end_momentum: str


class OneCycleLR(Scheduler):
    """Warm up from max_lr/div_factor to max_lr, then anneal to initial_lr/final_div_factor.

    max_lr 0.1, total_steps 10, pct_start 0.3 (cos): 0.0040…036, rising to 0.1 at step 2,
    falling to 4e-7 at step 9; step 10 (= total_steps) is still allowed and extrapolates;
    step 11 is refused (StepPastEnd). Momentum runs max → base → max.
    """

    type_name = "OneCycleLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        max_lr: float | list[float]
        total_steps: int | None = None
        epochs: int | None = None
        steps_per_epoch: int | None = None
        pct_start: float = 0.3
        anneal_strategy: str = "cos"
        cycle_momentum: bool = True
        base_momentum: float | list[float] = 0.85
        max_momentum: float | list[float] = 0.95
        div_factor: float = 25.0
        final_div_factor: float = 1e4
        three_phase: bool = False

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        self.params = params
        self.cycles_momentum = params.cycle_momentum
        self.cosine = params.anneal_strategy == "cos"
        self.total_steps = _total_steps(params)
        self.phases = _phases(params.pct_start, self.total_steps, params.three_phase)
        pct_start = params.pct_start
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise InvalidConfig(
                ("params", "pct_start"),
                f"Expected float between 0 and 1 pct_start, but got {pct_start}",
            )
        if params.anneal_strategy not in ("cos", "linear"):
            raise InvalidConfig(
                ("params", "anneal_strategy"),
                "anneal_strategy must be one of 'cos' or 'linear', "
                f"instead got {params.anneal_strategy}",
            )
        self.max_lrs = per_group("max_lr", params.max_lr, groups)
        for name in ("div_factor", "final_div_factor"):
            if getattr(params, name) == 0:
                raise InvalidConfig(
                    ("params", name),
                    f"{name} must not be 0: torch fails with 'float division by zero' "
                    "at construction",
                )
        if params.cycle_momentum:
            require_momentum_support(groups)
            self.max_momentums = per_group("max_momentum", params.max_momentum, groups)
            self.base_momentums = per_group("base_momentum", params.base_momentum, groups)
        _refuse_zero_length_first_phase(self.phases)

    def start(self) -> None:
        """torch overwrites ``initial_lr`` (unlike every other scheduler) and adds max/min_lr."""
        for group, max_lr in zip(self.groups, self.max_lrs, strict=True):
            group["initial_lr"] = max_lr / self.params.div_factor
            group["max_lr"] = max_lr
            group["min_lr"] = group["initial_lr"] / self.params.final_div_factor
        if self.cycles_momentum:
            for group, max_momentum, base_momentum in zip(
                self.groups, self.max_momentums, self.base_momentums, strict=True
            ):
                write_momentum(group, max_momentum)
                group["max_momentum"] = max_momentum
                group["base_momentum"] = base_momentum
        super().start()

    def _past_end_message(self, step: int) -> str:
        return (
            f"Tried to step {step} times. The specified number of total steps is {self.total_steps}"
        )

    def get_lr(self) -> list[float]:
        """Values read from the groups' keys (initial_lr, max_lr, min_lr, *_momentum), as torch.

        A step past the end fails here, before anything changed (the base counts back).
        torch searches the phase table per group; the phase and its ``pct`` depend on the
        step only, so they are found once, and every value is computed before a group is
        written.
        """
        step = self.last_epoch
        if step > self.total_steps:
            raise StepPastEnd(step, self.total_steps, self._past_end_message(step))
        phases = self.phases
        last = len(phases) - 1
        start_step = 0.0
        for index, phase in enumerate(phases):
            if step <= phase.end_step or index == last:
                break
            start_step = phase.end_step
        try:
            pct = (step - start_step) / (phase.end_step - start_step)
        except ZeroDivisionError:
            # Only the last phase can be zero steps long here (pct_start=1.0): torch
            # accepts the config, runs total_steps - 1 steps and divides by zero at the
            # next, so that step is where this schedule ends.
            raise StepPastEnd(
                step,
                self.total_steps,
                f"Tried to step {step} times. With this pct_start the last phase "
                f"is zero steps long, so the schedule ends at step {step - 1} "
                "(torch divides by zero here)",
            ) from None
        lrs = self._anneal_groups(phase.start_lr, phase.end_lr, pct)
        if self.cycles_momentum:
            write_momenta(
                self.groups, self._anneal_groups(phase.start_momentum, phase.end_momentum, pct)
            )
        return lrs

    def _anneal_groups(self, start_key: str, end_key: str, pct: float) -> list[float]:
        """torch's ``_annealing_cos`` / ``_annealing_linear`` from ``group[start_key]`` to
        ``group[end_key]``, for every group; the cosine term depends on ``pct`` only."""
        if self.cosine:
            cos_out = math.cos(math.pi * pct) + 1
            return [
                group[end_key] + (group[start_key] - group[end_key]) / 2.0 * cos_out
                for group in self.groups
            ]
        return [
            (group[end_key] - group[start_key]) * pct + group[start_key] for group in self.groups
        ]


def _total_steps(params: OneCycleLR.Params) -> int:
    """torch's precedence: total_steps, else epochs × steps_per_epoch."""
    if params.total_steps is not None:
        if params.total_steps <= 0:
            raise InvalidConfig(
                ("params", "total_steps"),
                f"Expected positive integer total_steps, but got {params.total_steps}",
            )
        return params.total_steps
    if params.epochs is not None and params.steps_per_epoch is not None:
        if params.epochs <= 0:
            raise InvalidConfig(
                ("params", "epochs"), f"Expected positive integer epochs, but got {params.epochs}"
            )
        if params.steps_per_epoch <= 0:
            raise InvalidConfig(
                ("params", "steps_per_epoch"),
                f"Expected positive integer steps_per_epoch, but got {params.steps_per_epoch}",
            )
        return params.epochs * params.steps_per_epoch
    missing = "total_steps"
    if params.epochs is not None:
        missing = "steps_per_epoch"
    elif params.steps_per_epoch is not None:
        missing = "epochs"
    raise InvalidConfig(
        ("params", missing), "You must define either total_steps OR (epochs AND steps_per_epoch)"
    )


def _phases(pct_start: float, total_steps: int, three_phase: bool) -> list[_Phase]:
    """torch's phase table; the end steps are floats except the last one."""
    warmup_end = float(pct_start * total_steps) - 1
    if three_phase:
        return [
            _Phase(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
            _Phase(
                float(2 * pct_start * total_steps) - 2,
                "max_lr",
                "initial_lr",
                "base_momentum",
                "max_momentum",
            ),
            _Phase(total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
        ]
    return [
        _Phase(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
        _Phase(total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
    ]


def _refuse_zero_length_first_phase(phases: list[_Phase]) -> None:
    """Refuse the phase table on which torch's constructor divides 0 by 0.

    Two phases can be selected while zero steps long: the first (it ends at step 0, so
    the construction step fails: refused here) and the last (selected at step
    total_steps, where :meth:`OneCycleLR.get_lr` ends the schedule, as torch accepts it).
    """
    if phases[0].end_step == 0:
        raise InvalidConfig(
            ("params", "pct_start"),
            "pct_start * total_steps == 1 makes the first phase zero steps long: "
            "torch fails with 'float division by zero' at construction",
        )
