"""Hugging Face's schedules (transformers 5.17.0 ``get_scheduler``), float for float.

Every ``SchedulerType`` but ``greedy`` is a torch ``LambdaLR`` whose λ is one of
transformers' module-level functions, or (``reduce_lr_on_plateau``) torch's
``ReduceLROnPlateau`` with the given keyword arguments. So each type here is a
LambdaLR (lr = base · λ(epoch), recomputed from ``base_lrs``; torch's construction
step evaluates λ(0)) whose λ is written out in transformers' exact order of
operations, ints and floats included: ``max(0, factor)`` returns the *int* 0 where
transformers' does, and an int lr times an int 0 stays an int in torch too.

A type's params are ``get_scheduler``'s ``num_warmup_steps`` and
``num_training_steps`` plus the schedule's own keyword arguments, with
transformers' defaults. Where ``get_scheduler`` ignores one of the two counts
(``constant``, ``constant_with_warmup``, ``inverse_sqrt``, ``reduce_lr_on_plateau``)
it is accepted and ignored here too; where it raises without one, the field is
required. ``lr_init`` stands for ``optimizer.defaults["lr"]``, which transformers
reads for ``polynomial`` and (with ``min_lr``) the two ``*_min_lr`` types; it
defaults to the first group's lr.

Refused at creation beyond transformers' own checks, as everywhere in the engine,
the configs that can only crash later: ``polynomial`` whose decay phase is empty
(0/0 at step ``num_warmup_steps``), whose ``power < 0`` meets ``0.0 ** power`` at
``num_training_steps``, or whose ``lr_init`` is 0; ``inverse_sqrt`` whose timescale
is ≤ 0 (a square root of a negative or 1/0 once the decay starts).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from service.schedules.base import Group, Scheduler
from service.schedules.errors import ExpressionError, InvalidConfig
from service.schedules.plateau import ReduceLROnPlateau

Lambda = Callable[[int], int | float]
WARMUP_AND_DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


class _HFLambdaLR(Scheduler):
    """torch's LambdaLR with transformers' λ: base · λ(epoch), not chainable.

    A SequentialLR milestone restarts it with ``get_lr()`` at epoch 0 (LambdaLR has no
    closed form in torch), which is what the base class does without one.
    """

    state_fields = (*Scheduler.state_fields,)

    def __init__(self, groups: list[Group], lr_lambda: Lambda) -> None:
        super().__init__(groups)
        self.lr_lambda = lr_lambda

    def get_lr(self) -> list[float]:
        try:
            factor = self.lr_lambda(self.last_epoch)
        except ValueError as exc:
            # math's domain errors (a cosine of an overflowed infinity): a failed step,
            # like an expression's; ArithmeticError already counts as one.
            raise ExpressionError(f"ValueError: {exc}") from None
        # torch calls λ once per group; λ is pure, so once is the same value.
        return [base * factor for base in self.base_lrs]


def _warmup_fraction(current_step: int, num_warmup_steps: int) -> float:
    """The linear warmup shared by most of transformers' λs (its ``max(1, ...)`` included)."""
    return float(current_step) / float(max(1, num_warmup_steps))


def _require(value: Any, name: str, type_name: str) -> Any:
    """``get_scheduler``'s refusal of a missing count, with its message."""
    if value is None:
        schedule = type_name.removeprefix("hf:")
        raise InvalidConfig(
            ("params", name), f"{schedule} requires `{name}`, please provide that argument."
        )
    return value


def _default_lr_init(lr_init: float | None, groups: list[Group]) -> float:
    """``optimizer.defaults["lr"]``: given, or the first group's lr (the usual optimizer)."""
    return groups[0]["lr"] if lr_init is None else lr_init


# -- constant and warmup-only ------------------------------------------------------


class HFConstant(_HFLambdaLR):
    """λ = 1 (an int, as transformers' ``_get_constant_lambda``): the lr never moves."""

    type_name = "hf:constant"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int | None = None
        num_training_steps: int | None = None

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups, _constant_lambda)


def _constant_lambda(current_step: int) -> int:
    return 1


class HFConstantWithWarmup(_HFLambdaLR):
    """Linear warmup from 0 over ``num_warmup_steps``, then 1.0.

    num_warmup_steps 4: λ = 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, …
    """

    type_name = "hf:constant_with_warmup"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int
        num_training_steps: int | None = None

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(
            groups, partial(_constant_with_warmup_lambda, num_warmup_steps=params.num_warmup_steps)
        )


def _constant_with_warmup_lambda(current_step: int, *, num_warmup_steps: int) -> float:
    if current_step < num_warmup_steps:
        # max(1.0, ...), a float here, unlike the other warmups.
        return float(current_step) / float(max(1.0, num_warmup_steps))
    return 1.0


# -- linear and cosine -------------------------------------------------------------


class HFLinear(_HFLambdaLR):
    """Warmup, then a straight line to 0 at ``num_training_steps`` (and 0.0 after it)."""

    type_name = "hf:linear"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int
        num_training_steps: int

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(
            groups,
            partial(
                _linear_lambda,
                num_warmup_steps=params.num_warmup_steps,
                num_training_steps=params.num_training_steps,
            ),
        )


def _linear_lambda(current_step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if current_step < num_warmup_steps:
        return _warmup_fraction(current_step, num_warmup_steps)
    remaining = float(num_training_steps - current_step)
    return max(0.0, remaining / float(max(1, num_training_steps - num_warmup_steps)))


def _decay_progress(current_step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    return float(current_step - num_warmup_steps) / float(
        max(1, num_training_steps - num_warmup_steps)
    )


def _cosine_min_lr_lambda(
    current_step: int,
    *,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float,
    min_lr_rate: float = 0.0,
) -> int | float:
    """transformers defines ``_get_cosine_schedule_with_warmup_lr_lambda`` twice; the
    second (this one, with ``min_lr_rate``) replaces the first in the module, so plain
    ``cosine`` runs it too: ``max(0, ...)`` with an int 0, and ``factor·1 + 0.0``."""
    if current_step < num_warmup_steps:
        return _warmup_fraction(current_step, num_warmup_steps)
    progress = _decay_progress(current_step, num_warmup_steps, num_training_steps)
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    factor = factor * (1 - min_lr_rate) + min_lr_rate
    return max(0, factor)


class HFCosine(_HFLambdaLR):
    """Warmup, then a cosine from 1 to 0 over ``num_cycles`` waves (0.5: one half-wave)."""

    type_name = "hf:cosine"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int
        num_training_steps: int
        num_cycles: float = 0.5

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(
            groups,
            partial(
                _cosine_min_lr_lambda,
                num_warmup_steps=params.num_warmup_steps,
                num_training_steps=params.num_training_steps,
                num_cycles=params.num_cycles,
            ),
        )


class HFCosineWithRestarts(_HFLambdaLR):
    """Warmup, then ``num_cycles`` cosine descents from 1 to 0, each restarting at 1;
    0.0 from ``num_training_steps`` on."""

    type_name = "hf:cosine_with_restarts"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int
        num_training_steps: int
        num_cycles: int = 1

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(
            groups,
            partial(
                _hard_restarts_lambda,
                num_warmup_steps=params.num_warmup_steps,
                num_training_steps=params.num_training_steps,
                num_cycles=params.num_cycles,
            ),
        )


def _hard_restarts_lambda(
    current_step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: int
) -> float:
    if current_step < num_warmup_steps:
        return _warmup_fraction(current_step, num_warmup_steps)
    progress = _decay_progress(current_step, num_warmup_steps, num_training_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


# -- with a minimum ----------------------------------------------------------------


def _min_lr_rate(
    min_lr: float | None, min_lr_rate: float | None, lr_init: float | None, groups: list[Group]
) -> float:
    """transformers' choice between ``min_lr`` (over the default lr) and ``min_lr_rate``."""
    if min_lr is not None and min_lr_rate is not None:
        raise InvalidConfig(("params", "min_lr"), "Only one of min_lr or min_lr_rate should be set")
    if min_lr is not None:
        default_lr = _default_lr_init(lr_init, groups)
        if default_lr == 0:
            raise InvalidConfig(
                ("params", "lr_init"),
                "min_lr is divided by lr_init (the optimizer's default lr), which is 0",
            )
        return min_lr / default_lr
    if min_lr_rate is None:
        raise InvalidConfig(
            ("params", "min_lr_rate"),
            "One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`",
        )
    return min_lr_rate


class HFCosineWithMinLR(_HFLambdaLR):
    """hf:cosine ending at ``min_lr_rate`` (or ``min_lr / lr_init``) instead of 0."""

    type_name = "hf:cosine_with_min_lr"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int
        num_training_steps: int
        num_cycles: float = 0.5
        min_lr: float | None = None
        min_lr_rate: float | None = None
        lr_init: float | None = None

    def __init__(self, groups: list[Group], params: Params) -> None:
        rate = _min_lr_rate(params.min_lr, params.min_lr_rate, params.lr_init, groups)
        super().__init__(
            groups,
            partial(
                _cosine_min_lr_lambda,
                num_warmup_steps=params.num_warmup_steps,
                num_training_steps=params.num_training_steps,
                num_cycles=params.num_cycles,
                min_lr_rate=rate,
            ),
        )


class HFCosineWarmupWithMinLR(_HFLambdaLR):
    """Like hf:cosine_with_min_lr, one step ahead: warmup reaches 1 at its last step
    ((step + 1) / warmup, or from ``warmup_lr_rate``), the decay starts at progress 1/T."""

    type_name = "hf:cosine_warmup_with_min_lr"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int
        num_training_steps: int
        num_cycles: float = 0.5
        min_lr: float | None = None
        min_lr_rate: float | None = None
        warmup_lr_rate: float | None = None
        lr_init: float | None = None

    def __init__(self, groups: list[Group], params: Params) -> None:
        rate = _min_lr_rate(params.min_lr, params.min_lr_rate, params.lr_init, groups)
        super().__init__(
            groups,
            partial(
                _cosine_warmup_min_lr_lambda,
                num_warmup_steps=params.num_warmup_steps,
                num_training_steps=params.num_training_steps,
                num_cycles=params.num_cycles,
                min_lr_rate=rate,
                warmup_lr_rate=params.warmup_lr_rate,
            ),
        )


def _cosine_warmup_min_lr_lambda(
    current_step: int,
    *,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float,
    min_lr_rate: float,
    warmup_lr_rate: float | None,
) -> int | float:
    # Everything as floats first, as transformers does; num_cycles is used as given.
    step = float(current_step)
    warmup = float(num_warmup_steps)
    training = float(num_training_steps)
    if step < warmup:
        if warmup_lr_rate is None:
            return (step + 1.0) / max(1.0, warmup)
        rate = float(warmup_lr_rate)
        return rate + (1.0 - rate) * step / max(1, warmup - 1)
    progress = (step - warmup + 1.0) / max(1.0, training - warmup)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    factor = factor * (1 - min_lr_rate) + min_lr_rate
    return max(0, factor)


# -- polynomial and inverse square root --------------------------------------------


class HFPolynomial(_HFLambdaLR):
    """Warmup, then (lr_init − lr_end)·(1 − progress)^power + lr_end, over lr_init
    (LambdaLR multiplies by each group's base lr); lr_end / lr_init after the end."""

    type_name = "hf:polynomial"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int
        num_training_steps: int
        lr_end: float = 1e-7
        power: float = 1.0
        lr_init: float | None = None

    def __init__(self, groups: list[Group], params: Params) -> None:
        lr_init = _default_lr_init(params.lr_init, groups)
        warmup, training = params.num_warmup_steps, params.num_training_steps
        if not (lr_init > params.lr_end):
            raise InvalidConfig(
                ("params", "lr_end"),
                f"lr_end ({params.lr_end}) must be smaller than initial lr ({lr_init})",
            )
        if lr_init == 0:
            raise InvalidConfig(
                ("params", "lr_init"),
                "lr_init is 0: transformers divides by it once the warmup is over",
            )
        if training == warmup >= 0:
            raise InvalidConfig(
                ("params", "num_training_steps"),
                "num_training_steps equals num_warmup_steps: transformers divides by the "
                f"empty decay phase at step {warmup}",
            )
        if params.power < 0 and training > warmup and training >= 0:
            raise InvalidConfig(
                ("params", "power"),
                f"a negative power raises 0.0 to it at step {training} (division by zero)",
            )
        super().__init__(
            groups,
            partial(
                _polynomial_lambda,
                num_warmup_steps=warmup,
                num_training_steps=training,
                lr_end=params.lr_end,
                power=params.power,
                lr_init=lr_init,
            ),
        )


def _polynomial_lambda(
    current_step: int,
    *,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float,
    power: float,
    lr_init: float,
) -> float:
    if current_step < num_warmup_steps:
        return _warmup_fraction(current_step, num_warmup_steps)
    if current_step > num_training_steps:
        return lr_end / lr_init
    lr_range = lr_init - lr_end
    decay_steps = num_training_steps - num_warmup_steps
    pct_remaining = 1 - (current_step - num_warmup_steps) / decay_steps
    decay = lr_range * pct_remaining**power + lr_end
    return decay / lr_init


class HFInverseSqrt(_HFLambdaLR):
    """Warmup, then 1 / sqrt((step + timescale − warmup) / timescale); timescale defaults
    to ``num_warmup_steps``, or 10 000 when that is 0."""

    type_name = "hf:inverse_sqrt"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int
        num_training_steps: int | None = None
        timescale: int | None = None

    def __init__(self, groups: list[Group], params: Params) -> None:
        timescale = params.timescale
        if timescale is None:
            timescale = params.num_warmup_steps or 10_000
        if timescale <= 0:
            field = "timescale" if params.timescale is not None else "num_warmup_steps"
            raise InvalidConfig(
                ("params", field),
                f"the timescale is {timescale}: the decay would take the square root of a "
                "negative number or divide by zero",
            )
        super().__init__(
            groups,
            partial(
                _inverse_sqrt_lambda, num_warmup_steps=params.num_warmup_steps, timescale=timescale
            ),
        )


def _inverse_sqrt_lambda(current_step: int, *, num_warmup_steps: int, timescale: int) -> float:
    if current_step < num_warmup_steps:
        return _warmup_fraction(current_step, num_warmup_steps)
    shift = timescale - num_warmup_steps
    return 1.0 / math.sqrt((current_step + shift) / timescale)


# -- warmup, stable, decay ---------------------------------------------------------


class HFWarmupStableDecay(_HFLambdaLR):
    """Warmup from ``min_lr_ratio`` to 1, hold 1 for ``num_stable_steps``, decay back to
    ``min_lr_ratio`` over ``num_decay_steps``, then stay there.

    ``num_stable_steps`` defaults to training − warmup − decay; given both, transformers
    warns and uses ``num_stable_steps``.
    """

    type_name = "hf:warmup_stable_decay"

    @dataclass(frozen=True)
    class Params:
        num_warmup_steps: int
        num_decay_steps: int
        num_training_steps: int | None = None
        num_stable_steps: int | None = None
        warmup_type: str = "linear"
        decay_type: str = "cosine"
        min_lr_ratio: float = 0
        num_cycles: float = 0.5

    def __init__(self, groups: list[Group], params: Params) -> None:
        if params.num_training_steps is None and params.num_stable_steps is None:
            raise InvalidConfig(
                ("params", "num_stable_steps"),
                "Either num_training_steps or num_stable_steps must be specified.",
            )
        for field in ("warmup_type", "decay_type"):
            shape = getattr(params, field)
            if shape not in WARMUP_AND_DECAY_SHAPES:
                kind = field.removesuffix("_type")
                raise InvalidConfig(
                    ("params", field),
                    f"Unknown {kind} type: {shape}, expected 'linear', 'cosine' or '1-sqrt'",
                )
        num_stable_steps = params.num_stable_steps
        if num_stable_steps is None:
            assert params.num_training_steps is not None
            num_stable_steps = (
                params.num_training_steps - params.num_warmup_steps - params.num_decay_steps
            )
        super().__init__(
            groups,
            partial(
                _wsd_lambda,
                num_warmup_steps=params.num_warmup_steps,
                num_stable_steps=num_stable_steps,
                num_decay_steps=params.num_decay_steps,
                warmup_type=params.warmup_type,
                decay_type=params.decay_type,
                min_lr_ratio=params.min_lr_ratio,
                num_cycles=params.num_cycles,
            ),
        )


def _wsd_lambda(
    current_step: int,
    *,
    num_warmup_steps: int,
    num_stable_steps: int,
    num_decay_steps: int,
    warmup_type: str,
    decay_type: str,
    min_lr_ratio: float,
    num_cycles: float,
) -> float:
    if current_step < num_warmup_steps:
        progress = _warmup_fraction(current_step, num_warmup_steps)
        if warmup_type == "linear":
            factor = progress
        elif warmup_type == "cosine":
            factor = 0.5 * (1.0 - math.cos(math.pi * progress))
        else:
            factor = 1.0 - math.sqrt(1.0 - progress)
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)
    if current_step < num_warmup_steps + num_stable_steps:
        return 1.0
    if current_step < num_warmup_steps + num_stable_steps + num_decay_steps:
        progress = float(current_step - num_warmup_steps - num_stable_steps) / float(
            max(1, num_decay_steps)
        )
        if decay_type == "linear":
            factor = 1.0 - progress
        elif decay_type == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        else:
            factor = 1.0 - math.sqrt(progress)
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)
    return min_lr_ratio


# -- on a plateau ------------------------------------------------------------------


class HFReduceLROnPlateau(ReduceLROnPlateau):
    """torch's ReduceLROnPlateau with the given keyword arguments (transformers adds nothing).

    Its metric defaults to ``eval_loss``: the Trainer steps it with
    ``metrics["eval_" + metric_for_best_model]``, and that model defaults to ``loss``.
    """

    type_name = "hf:reduce_lr_on_plateau"
    default_monitor: ClassVar[str] = "eval_loss"

    @dataclass(frozen=True)
    class Params(ReduceLROnPlateau.Params):
        num_warmup_steps: int | None = None
        num_training_steps: int | None = None


HF_SCHEDULERS: tuple[type[Scheduler], ...] = (
    HFLinear,
    HFCosine,
    HFCosineWithRestarts,
    HFPolynomial,
    HFConstant,
    HFConstantWithWarmup,
    HFInverseSqrt,
    HFReduceLROnPlateau,
    HFCosineWithMinLR,
    HFCosineWarmupWithMinLR,
    HFWarmupStableDecay,
)
