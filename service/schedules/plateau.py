"""ReduceLROnPlateau (torch's §14): cut the lr when a monitored metric stops improving.

Unlike every other scheduler it never touches the lrs at construction, sets no
``initial_lr`` and has no ``base_lrs``: each reduction multiplies whatever lr the
groups hold, so it also works after another schedule (as SequentialLR's last
child) or after a hand edit.
"""

import math
from dataclasses import dataclass
from typing import ClassVar

from service.schedules.base import Group, Metrics, Scheduler, read_metric
from service.schedules.codec import encode_floats
from service.schedules.errors import InvalidConfig


class ReduceLROnPlateau(Scheduler):
    """lr ×= factor (not below min_lr) after more than ``patience`` steps without improvement.

    mode min, patience 2, factor 0.1, lr 0.1, losses 1.0, 1.0, 1.0, 1.0: the fourth
    step is the third bad one, so lr becomes 0.01; then ``cooldown`` steps are ignored.
    NaN is never an improvement; ``best`` may become ±inf but never NaN.
    """

    type_name = "ReduceLROnPlateau"
    default_monitor: ClassVar[str] = "val_loss"
    uses_metric = True
    # torch's ReduceLROnPlateau has no base_lrs and never counts _step_count.
    state_fields = ("last_epoch", "best", "num_bad_epochs", "cooldown_counter")

    @dataclass(frozen=True)
    class Params:
        mode: str = "min"
        factor: float = 0.1
        patience: int = 10
        threshold: float = 1e-4
        threshold_mode: str = "rel"
        cooldown: int = 0
        min_lr: float | list[float] = 0
        eps: float = 1e-8

    def __init__(
        self, groups: list[Group], params: Params, *, monitor: str = default_monitor
    ) -> None:
        super().__init__(groups)
        if params.factor >= 1.0:
            raise InvalidConfig(("params", "factor"), "Factor should be < 1.0.")
        if isinstance(params.min_lr, list):
            if len(params.min_lr) != len(groups):
                raise InvalidConfig(
                    ("params", "min_lr"),
                    f"expected {len(groups)} min_lrs, got {len(params.min_lr)}",
                )
            self.min_lrs = list(params.min_lr)
        else:
            self.min_lrs = [params.min_lr] * len(groups)
        if params.mode not in ("min", "max"):
            raise InvalidConfig(("params", "mode"), f"mode {params.mode} is unknown!")
        if params.threshold_mode not in ("rel", "abs"):
            raise InvalidConfig(
                ("params", "threshold_mode"), f"threshold mode {params.threshold_mode} is unknown!"
            )
        self.params = params
        self.monitor = monitor
        self.patience = params.patience
        self.cooldown = params.cooldown
        self.factor = params.factor
        self.eps = params.eps
        self.threshold = params.threshold
        # The modes as flags: torch compares the mode strings at every step.
        self.minimizes = params.mode == "min"
        self.relative = params.threshold_mode == "rel"
        self.last_epoch = 0
        self.best = math.inf if params.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def start(self) -> None:
        """torch's constructor changes no group: no ``initial_lr``, no construction step."""

    def _initial_step(self) -> None:
        """torch never takes a construction step for this class (a composite may ask for one)."""

    def get_lr(self) -> list[float]:
        """Without a metric there is nothing to decide: the groups keep their lrs."""
        return self.lrs()

    def _advance(self, metrics: Metrics) -> None:
        try:
            current = float(metrics[self.monitor])  # type: ignore[index]
        except (KeyError, TypeError):
            # Anything but a mapping holding the metric: read_metric takes a bare number
            # and refuses the rest. Only the common case (a dict) skips that call.
            current = read_metric(metrics, self.monitor)
        # torch's _is_better, inline; its arithmetic stays per step (a huge int threshold
        # must fail at the step, as in torch, not at construction), before anything changes.
        best, threshold = self.best, self.threshold
        if self.minimizes:
            better = current < (best * (1.0 - threshold) if self.relative else best - threshold)
        else:
            better = current > (best * (threshold + 1.0) if self.relative else best + threshold)
        self.last_epoch += 1
        if better:
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            # Bad steps during a cooldown do not count; improvements still move best.
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lrs()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _reduce_lrs(self) -> None:
        """Per group: max(lr·factor, min_lr), applied only if it lowers the lr by more than eps.

        Called on every plateau, also once the lrs sit at min_lr and nothing changes any
        more; only a reduction that happened is reported (and pays for its event).
        """
        factor, eps = self.factor, self.eps
        previous_lrs = None
        min_lrs = self.min_lrs
        for index, group in enumerate(self.groups):
            min_lr = min_lrs[index]
            old_lr = float(group["lr"])
            scaled = old_lr * factor
            # max(scaled, min_lr) without the call: max keeps its first argument unless
            # the second is greater (so NaN and -0.0 come out as max would have them).
            new_lr = min_lr if min_lr > scaled else scaled
            if old_lr - new_lr > eps:
                if previous_lrs is None:
                    previous_lrs = self.lrs()
                group["lr"] = new_lr
        if previous_lrs is not None:
            self.emit(
                "plateau_reduction",
                {"from": encode_floats(previous_lrs), "to": encode_floats(self.lrs())},
            )
