"""The scheduler base: torch's ``LRScheduler`` template method, without torch.

A scheduler holds the param groups (plain dicts, mutated in place exactly like
``optimizer.param_groups``), ``base_lrs`` and ``last_epoch``. ``start()`` does
what torch's constructor does to the groups (``initial_lr``, the initial step);
``step()`` advances one step by the subclass's chainable ``get_lr()``; ``state()``
and ``load_state()`` carry the declared fields, so a scheduler rebuilt from its
config and state continues bit-exactly in another process.

Subclasses declare ``type_name``, the extra ``state_fields`` (torch's attribute
names) and implement ``get_lr()``; metric-driven or momentum-cycling ones
override ``uses_metric`` / ``cycles_momentum`` and ``_advance``.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from service.schedules.codec import decode_floats, encode_floats
from service.schedules.errors import ExpressionError, InvalidStepValue, MissingMetric

Group = dict[str, Any]
Metrics = float | Mapping[str, float] | None


@dataclass(frozen=True)
class ScheduleEvent:
    """Something worth a line in the run's history (plateau reduction, warm restart, ...)."""

    kind: str
    detail: dict[str, Any]


@dataclass
class StepOutcome:
    """What one step (or the construction, step 0) left in the groups."""

    step: int
    lr: list[float]
    momentum: list[float] | None
    events: list[ScheduleEvent] = field(default_factory=list)
    stop: bool | None = None


def read_metric(metrics: Metrics, monitor: str) -> float:
    """The monitored value: a bare number is taken as-is (torch's ``step(val_loss)``)."""
    if metrics is None:
        raise MissingMetric(monitor)
    if isinstance(metrics, int | float):
        return float(metrics)
    try:
        return float(metrics[monitor])
    except KeyError:
        raise MissingMetric(monitor) from None


class Scheduler:
    type_name: ClassVar[str] = ""
    # Attribute names (torch's) saved by state(); subclasses extend the tuple.
    state_fields: ClassVar[tuple[str, ...]] = ("last_epoch", "base_lrs", "_step_count")

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self.last_epoch = -1
        self.base_lrs: list[float] = []
        self._step_count = 0
        self._is_initial = False
        self._pending_events: list[ScheduleEvent] = []

    # -- torch's construction -------------------------------------------------
    def start(self) -> None:
        """torch's ``__init__`` side effects: ``initial_lr`` (setdefault), base_lrs, first step."""
        for group in self.groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in self.groups]
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self._advance(None)
        finally:
            self._is_initial = False

    # -- stepping -------------------------------------------------------------
    def _advance(self, metrics: Metrics) -> None:
        """torch's ``step()`` with ``epoch=None``: count, advance, write ``get_lr()``.

        ``get_lr()`` computes every value before a group is written, so undoing the
        counters is all a failed step needs to leave the scheduler as it was.
        """
        previous = (self.last_epoch, self._step_count)
        self._step_count += 1
        self.last_epoch += 1
        try:
            values = self.get_lr()
        except BaseException:
            self.last_epoch, self._step_count = previous
            raise
        for group, lr in zip(self.groups, values, strict=True):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def closed_form_lr(self) -> list[float] | None:
        """torch's ``_get_closed_form_lr`` at ``last_epoch``, or None where the class has none."""
        return None

    def restart_at_zero(self) -> None:
        """torch's ``_update_lr(0)``: what a SequentialLR does to a child at its milestone.

        ``last_epoch`` becomes 0 and the lrs come from the closed form at epoch 0 where the
        class has one, otherwise from ``get_lr()`` outside initial mode; ``_step_count``
        is left alone, as in torch.
        """
        previous = self.last_epoch
        self.last_epoch = 0
        try:
            values = self.closed_form_lr()
            if values is None:
                values = self.get_lr()
        except BaseException:
            self.last_epoch = previous
            raise
        for group, lr in zip(self.groups, values, strict=True):
            group["lr"] = lr

    def check_restart_at_zero(self) -> None:
        """Raise ``InvalidConfig`` (loc relative to this config) if ``restart_at_zero`` would crash.

        A SequentialLR calls it for every child that a milestone will reach, so a config
        torch accepts but can only crash on (LinearLR ``total_iters=0`` there) is refused
        when the run is created rather than at the milestone.
        """

    def step(self, metrics: Metrics = None) -> StepOutcome:
        """One public step: advance, then report the groups' values and the events it produced.

        Arithmetic failures torch would crash on at this step (an expression dividing by
        zero, an overflowing power) become ``InvalidStepValue`` naming this scheduler's
        step, also when a nested child raised them with its own count. A failed step
        (those, ``MissingMetric``, ``StepPastEnd``) leaves the scheduler as it was.
        """
        attempted = self.last_epoch + 1
        try:
            self._advance(metrics)
        except (ArithmeticError, ExpressionError) as exc:
            raise InvalidStepValue(attempted, f"step {attempted}: {describe_failure(exc)}") from exc
        except InvalidStepValue as exc:
            if exc.step == attempted:
                raise
            raise InvalidStepValue(attempted, f"step {attempted}: {exc}") from exc
        return self.outcome()

    def outcome(self) -> StepOutcome:
        return StepOutcome(
            step=self.last_epoch,
            lr=self.lrs(),
            momentum=self.momenta(),
            events=self.drain_events(),
            stop=self.stop_flag(),
        )

    # -- what the groups hold -------------------------------------------------
    @property
    def uses_metric(self) -> bool:
        """Whether some step of this schedule reads a metric (no catch-up across gaps then)."""
        return False

    @property
    def cycles_momentum(self) -> bool:
        return False

    def stop_flag(self) -> bool | None:
        return None

    def lrs(self) -> list[float]:
        return [group["lr"] for group in self.groups]

    def momenta(self) -> list[float] | None:
        if not self.cycles_momentum:
            return None
        return [
            group["betas"][0] if "betas" in group else group["momentum"] for group in self.groups
        ]

    def set_lr(self, lrs: Sequence[float]) -> None:
        """A hand edit of ``param_groups[i]["lr"]``: later chainable steps start from it."""
        for group, lr in zip(self.groups, lrs, strict=True):
            group["lr"] = lr

    # -- events ---------------------------------------------------------------
    def emit(self, kind: str, **detail: Any) -> None:
        self._pending_events.append(ScheduleEvent(kind, detail))

    def drain_events(self) -> list[ScheduleEvent]:
        events, self._pending_events = self._pending_events, []
        return events

    # -- state ----------------------------------------------------------------
    def own_state(self) -> dict[str, Any]:
        """The declared fields, JSON-able (composites add their children's)."""
        return encode_floats({name: _plain(getattr(self, name)) for name in self.state_fields})

    def load_own_state(self, state: Mapping[str, Any]) -> None:
        decoded = decode_floats(dict(state))
        for name in self.state_fields:
            setattr(self, name, decoded[name])

    def state(self) -> dict[str, Any]:
        """The whole state of a root scheduler: its fields plus the groups as it left them."""
        return {**self.own_state(), "param_groups": encode_floats([_plain(g) for g in self.groups])}


def describe_failure(exc: BaseException) -> str:
    """``OverflowError: (34, 'Numerical result out of range')`` rather than the bare tuple."""
    if isinstance(exc, ExpressionError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _plain(value: Any) -> Any:
    """Tuples become lists so that a state survives a JSON round trip unchanged."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
