"""Cosine annealing, plain and with warm restarts (torch's §10 and §11).

CosineAnnealingLR is chainable: each step rescales the lr the groups hold, so
it follows hand edits and drifts (by ulps) from its closed form; only the
recursion reproduces torch. CosineAnnealingWarmRestarts is not chainable: its
lr is a function of ``base_lrs`` and the integer pair ``(T_cur, T_i)``.
"""

import math
from dataclasses import dataclass

from service.schedules.base import Group, Metrics, Scheduler
from service.schedules.errors import InvalidConfig, InvalidStepValue


class CosineAnnealingLR(Scheduler):
    """lr follows half a cosine from base to eta_min over T_max steps, then climbs back.

    T_max = 4, lr 0.1, eta_min 0: 0.1, 0.0853…, 0.05, 0.0146…, 0.0 (step 4), 0.0146…,
    … 0.1 again at step 8 — torch does not clamp after T_max.
    """

    type_name = "CosineAnnealingLR"
    state_fields = (*Scheduler.state_fields,)

    @dataclass(frozen=True)
    class Params:
        T_max: int
        eta_min: float = 0.0

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        if params.T_max == 0:
            # torch accepts it and dies on `% (2 * T_max)` at the first step.
            raise InvalidConfig(
                ("params", "T_max"),
                "T_max must not be 0: torch fails with 'integer modulo by zero' at the first step",
            )
        self.T_max = params.T_max
        self.eta_min = params.eta_min

    def get_lr(self) -> list[float]:
        """torch's three branches, first match wins, each in torch's operand order.

        The cosine factors depend on the step only, so each is computed once rather than
        per group: the same floats, as Python evaluates torch's expressions left to right.
        """
        epoch, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self.lrs()
        if self._step_count == 1 and epoch > 0:
            height = 1 + math.cos(epoch * math.pi / t_max)
            return [eta_min + (base - eta_min) * height / 2 for base in self.base_lrs]
        if (epoch - 1 - t_max) % (2 * t_max) == 0:
            # Where the ratio below would be 0/0: add the step from the trough instead.
            rise = 1 - math.cos(math.pi / t_max)
            return [
                group["lr"] + (base - eta_min) * rise / 2
                for base, group in zip(self.base_lrs, self.groups, strict=True)
            ]
        try:
            ratio = (1 + math.cos(math.pi * epoch / t_max)) / (
                1 + math.cos(math.pi * (epoch - 1) / t_max)
            )
        except ZeroDivisionError:
            # Only for T_max beyond ~2e8, where cos rounds to -1 off the trough step.
            raise InvalidStepValue(
                epoch, "torch divides by zero here (float division by zero)"
            ) from None
        return [ratio * (group["lr"] - eta_min) + eta_min for group in self.groups]

    def closed_form_lr(self) -> list[float]:
        return [
            self.eta_min
            + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
            for base in self.base_lrs
        ]


class CosineAnnealingWarmRestarts(Scheduler):
    """Cosine from base to eta_min over T_i steps, then a jump back to base (a warm restart).

    T_0 = 2, T_mult = 2: T_cur runs 0, 1 | 0, 1, 2, 3 | 0, … with T_i 2, then 4, then 8;
    lr = eta_min + (base - eta_min) * (1 + cos(π·T_cur / T_i)) / 2.
    """

    type_name = "CosineAnnealingWarmRestarts"
    state_fields = (*Scheduler.state_fields, "T_i", "T_cur")

    @dataclass(frozen=True)
    class Params:
        T_0: int
        T_mult: int = 1
        eta_min: float = 0.0

    def __init__(self, groups: list[Group], params: Params) -> None:
        super().__init__(groups)
        if params.T_0 <= 0:
            raise InvalidConfig(
                ("params", "T_0"), f"Expected positive integer T_0, but got {params.T_0}"
            )
        if params.T_mult < 1:
            raise InvalidConfig(
                ("params", "T_mult"), f"Expected integer T_mult >= 1, but got {params.T_mult}"
            )
        self.T_0 = params.T_0
        self.T_mult = params.T_mult
        self.eta_min = params.eta_min
        self.T_i = params.T_0
        self.T_cur = self.last_epoch

    def _advance(self, metrics: Metrics) -> None:
        """torch's own ``step()``: it never counts ``_step_count``.

        Before the first step (``last_epoch < 0``: construction, or a SequentialLR
        re-running this child's construction) torch takes the explicit-epoch-0 path.
        The new position and its lrs are computed before anything is written, so a
        failing step changes nothing.
        """
        restarted = False
        if self.last_epoch < 0:
            t_i, t_cur, epoch = self.T_0, 0, 0
        else:
            t_i, t_cur, epoch = self.T_i, self.T_cur + 1, self.last_epoch + 1
            if t_cur >= t_i:
                restarted = True
                t_cur = t_cur % t_i
                t_i = t_i * self.T_mult
        lrs = self._lrs_at(t_cur, t_i)
        self.T_i, self.T_cur, self.last_epoch = t_i, t_cur, epoch
        if restarted:
            self.emit("warm_restart", {"T_i": t_i, "T_cur": t_cur, "step": epoch})
        for index, group in enumerate(self.groups):
            group["lr"] = lrs[index]

    def get_lr(self) -> list[float]:
        return self._lrs_at(self.T_cur, self.T_i)

    def _lrs_at(self, t_cur: int, t_i: int) -> list[float]:
        """From base_lrs and (T_cur, T_i); ``π·T_cur`` first, then ``/ T_i``, as torch."""
        eta_min = self.eta_min
        height = 1 + math.cos(math.pi * t_cur / t_i)
        return [eta_min + (base - eta_min) * height / 2 for base in self.base_lrs]
