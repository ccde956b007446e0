"""The multiplicative decay schedulers (torch's §2–9): each step scales the lr the groups hold.

All but LambdaLR are chainable: ``get_lr()`` multiplies the *current* ``group["lr"]``,
so they follow hand edits and compose inside a ChainedScheduler, and their values
drift by ulps from the textbook closed forms. Only the recursion, in torch's exact
operand order, reproduces torch; ``closed_form_lr`` exists for the one place torch
uses it here: a SequentialLR milestone (epoch 0).

Refused at creation beyond torch's own checks (each would only crash torch later):
StepLR ``step_size=0``, ConstantLR ``factor=0`` with ``total_iters > 0``, PolynomialLR
``power < 0`` with ``total_iters > 0``, and (via ``check_restart_at_zero``) LinearLR
``total_iters=0`` / PolynomialLR ``total_iters=0`` as a SequentialLR child that a
milestone reaches. Odd values torch accepts and runs (negative step sizes or
milestones, ``gamma > 1``, ``total_iters <= 0``) are kept: they have a defined
schedule, and refusing them would make us stricter than the library we mirror.
"""

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.schedules.base import Group, Scheduler
from service.schedules.errors import ExpressionError, InvalidConfig
from service.schedules.expressions import compile_expression

Lambda = Callable[[int | float], int | float]


def compile_lambdas(source: str | Sequence[str], group_count: int) -> list[Lambda]:
    """One ``lr_lambda`` per group, as torch spreads a single callable over every group."""
    if isinstance(source, str):
        return [compile_expression(source, "epoch", ("params", "lr_lambda"))] * group_count
    if len(source) != group_count:
        raise InvalidConfig(
            ("params", "lr_lambda"), f"Expected {group_count} lr_lambdas, but got {len(source)}"
        )
    return [
        compile_expression(text, "epoch", ("params", "lr_lambda", index))
        for index, text in enumerate(source)
    ]


def check_lambdas_at_zero(lambdas: list[Lambda], source: str | Sequence[str], when: str) -> None:
    """Evaluate every lambda at epoch 0 (pure, so harmless) and refuse one that fails there."""
    for index, function in enumerate(lambdas):
        try:
            function(0)
        except ExpressionError as exc:
            loc = (
                ("params", "lr_lambda")
                if isinstance(source, str)
                else ("params", "lr_lambda", index)
            )
            raise InvalidConfig(
                loc, f"fails at epoch 0, which torch evaluates {when}: {exc}"
            ) from None


class LambdaLR(Scheduler):
    """lr = base · λ(epoch), recomputed from base_lrs each step (not chainable).

    ``"0.95 ** epoch"`` on lr 0.1: 0.1, 0.095, 0.09025, …; ``"epoch // 30"`` gives
    ints times base: 0.0 for epochs 0–29, then base, 2·base, …
    """

    type_name = "LambdaLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        lr_lambda: str | list[str]

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        self.lr_lambdas = compile_lambdas(params.lr_lambda, len(groups))
        # torch calls λ(0) in its constructor, so a λ failing there is a refused config.
        check_lambdas_at_zero(self.lr_lambdas, params.lr_lambda, "at construction")

    def get_lr(self) -> list[float]:
        epoch, lambdas = self.last_epoch, self.lr_lambdas
        return [base * lambdas[index](epoch) for index, base in enumerate(self.base_lrs)]


class MultiplicativeLR(Scheduler):
    """lr ×= λ(epoch) for epochs 1, 2, …; construction leaves the lr alone.

    ``"0.95"`` on lr 0.1: 0.1, 0.095, 0.09025, … each the previous lr times λ.
    """

    type_name = "MultiplicativeLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        lr_lambda: str | list[str]

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        self.lr_lambda_source = params.lr_lambda
        self.lr_lambdas = compile_lambdas(params.lr_lambda, len(groups))

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self.lrs()
        epoch, lambdas = self.last_epoch, self.lr_lambdas
        return [group["lr"] * lambdas[index](epoch) for index, group in enumerate(self.groups)]

    def check_restart_at_zero(self) -> None:
        # At a SequentialLR milestone torch calls λ(0) outside initial mode.
        check_lambdas_at_zero(self.lr_lambdas, self.lr_lambda_source, "at its milestone")


class StepLR(Scheduler):
    """lr ×= gamma every step_size steps.

    lr 0.05, step_size 30, gamma 0.1: 0.05 while epoch < 30, 0.005 while epoch < 60, …
    """

    type_name = "StepLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        step_size: int
        gamma: float = 0.1

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        if params.step_size == 0:
            raise InvalidConfig(
                ("params", "step_size"),
                "step_size must not be 0: torch fails with 'integer modulo by zero' "
                "at the first step",
            )
        self.step_size = params.step_size
        self.gamma = params.gamma

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self.lrs()
        return [group["lr"] * self.gamma for group in self.groups]

    def closed_form_lr(self) -> list[float]:
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(Scheduler):
    """lr ×= gamma at each milestone (gamma**n where a milestone is listed n times).

    lr 0.05, milestones [30, 80]: 0.05 while epoch < 30, 0.005 while epoch < 80, then 0.0005.
    A milestone 0 already decays at construction, as in torch.
    """

    type_name = "MultiStepLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        milestones: list[int]
        gamma: float = 0.1

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        # torch keeps a Counter: unsorted input is fine and duplicates count.
        self.milestones = Counter(params.milestones)
        self.sorted_milestones = sorted(self.milestones.elements())
        self.gamma = params.gamma

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self.lrs()
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [group["lr"] * factor for group in self.groups]

    def closed_form_lr(self) -> list[float]:
        passed = bisect_right(self.sorted_milestones, self.last_epoch)
        return [base * self.gamma**passed for base in self.base_lrs]


class ConstantLR(Scheduler):
    """lr = lr·factor from construction until total_iters, then ×(1/factor) once.

    lr 0.05, factor 0.5, total_iters 4: 0.025 for epochs 0–3, 0.05 from epoch 4 on.
    """

    type_name = "ConstantLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        factor: float = 1.0 / 3
        total_iters: int = 5

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        if params.factor > 1.0 or params.factor < 0:
            raise InvalidConfig(
                ("params", "factor"),
                "Constant multiplicative factor expected to be between 0 and 1.",
            )
        if params.factor == 0 and params.total_iters > 0:
            raise InvalidConfig(
                ("params", "factor"),
                "factor must not be 0: torch fails with 'float division by zero' "
                "at step total_iters",
            )
        self.factor = params.factor
        self.total_iters = params.total_iters

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.groups]
        if self.last_epoch != self.total_iters:
            return self.lrs()
        return [group["lr"] * (1.0 / self.factor) for group in self.groups]

    def closed_form_lr(self) -> list[float]:
        return [
            base * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
            for base in self.base_lrs
        ]


class LinearLR(Scheduler):
    """lr goes linearly from lr·start_factor to lr·end_factor over total_iters steps.

    lr 0.05, start 0.5, end 1.0, total_iters 4: 0.025, 0.03125, 0.0375, 0.04375, 0.05, 0.05 …
    """

    type_name = "LinearLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        start_factor: float = 1.0 / 3
        end_factor: float = 1.0
        total_iters: int = 5

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        if params.start_factor > 1.0 or params.start_factor <= 0:
            raise InvalidConfig(
                ("params", "start_factor"),
                "Starting multiplicative factor expected to be greater than 0 and less or "
                "equal to 1.",
            )
        if params.end_factor > 1.0 or params.end_factor < 0:
            raise InvalidConfig(
                ("params", "end_factor"),
                "Ending multiplicative factor expected to be between 0 and 1.",
            )
        self.start_factor = params.start_factor
        self.end_factor = params.end_factor
        self.total_iters = params.total_iters

    def get_lr(self) -> list[float]:
        epoch, start, end = self.last_epoch, self.start_factor, self.end_factor
        if epoch == 0:
            return [group["lr"] * start for group in self.groups]
        if self._is_initial or epoch > self.total_iters:
            return self.lrs()
        return [
            group["lr"]
            * (1.0 + (end - start) / (self.total_iters * start + (epoch - 1) * (end - start)))
            for group in self.groups
        ]

    def closed_form_lr(self) -> list[float]:
        start, end = self.start_factor, self.end_factor
        reached = min(self.total_iters, self.last_epoch)
        return [
            base * (start + (end - start) * reached / self.total_iters) for base in self.base_lrs
        ]

    def check_restart_at_zero(self) -> None:
        if self.total_iters == 0:
            raise InvalidConfig(
                ("params", "total_iters"),
                "total_iters must not be 0 for a SequentialLR child after the first: torch's "
                "closed form fails with 'division by zero' at its milestone",
            )


class ExponentialLR(Scheduler):
    """lr ×= gamma every step: lr 0.1, gamma 0.9 → 0.1, 0.09, 0.081, …"""

    type_name = "ExponentialLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        gamma: float

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        self.gamma = params.gamma

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self.lrs()
        return [group["lr"] * self.gamma for group in self.groups]

    def closed_form_lr(self) -> list[float]:
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class PolynomialLR(Scheduler):
    """lr falls as (1 - epoch/total_iters)**power to 0 at total_iters, then stays.

    lr 0.1, total_iters 4, power 1: 0.1, 0.075, 0.05, 0.025, 0.0, 0.0, …
    """

    type_name = "PolynomialLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        total_iters: int = 5
        power: float = 1.0

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        if params.power < 0 and params.total_iters > 0:
            raise InvalidConfig(
                ("params", "power"),
                "power must not be negative: torch fails with '0.0 cannot be raised to a "
                "negative power' at step total_iters",
            )
        self.total_iters = params.total_iters
        self.power = params.power

    def get_lr(self) -> list[float]:
        epoch, total = self.last_epoch, self.total_iters
        if self._is_initial or epoch > total:
            return self.lrs()
        decay_factor = ((1.0 - epoch / total) / (1.0 - (epoch - 1) / total)) ** self.power
        return [group["lr"] * decay_factor for group in self.groups]

    def closed_form_lr(self) -> list[float]:
        total = self.total_iters
        return [
            base * (1.0 - min(total, self.last_epoch) / total) ** self.power
            for base in self.base_lrs
        ]

    def check_restart_at_zero(self) -> None:
        # The closed form at epoch 0 divides min(total_iters, 0) by total_iters, and for
        # total_iters < 0 raises 0.0 to the power.
        if self.total_iters == 0:
            raise InvalidConfig(
                ("params", "total_iters"),
                "total_iters must not be 0 for a SequentialLR child after the first: torch's "
                "closed form fails with 'division by zero' at its milestone",
            )
        if self.total_iters < 0 and self.power < 0:
            raise InvalidConfig(
                ("params", "power"),
                "power must not be negative with total_iters < 0 for a SequentialLR child "
                "after the first: torch fails with '0.0 cannot be raised to a negative "
                "power' at its milestone",
            )
