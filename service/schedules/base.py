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
from service.schedules.errors import MissingMetric

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
        """torch's ``__init__`` side effects: ``initial_lr`` (setdefault), base_lrs, initial step."""
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
        """torch's ``step()`` with ``epoch=None``: count, advance, write ``get_lr()``."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.groups, self.get_lr(), strict=True):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def closed_form_lr(self) -> list[float] | None:
        """torch's ``_get_closed_form_lr`` at ``last_epoch``, or None where the class has none."""
        return None

    def step(self, metrics: Metrics = None) -> StepOutcome:
        """One public step: advance, then report the groups' values and the events it produced."""
        self._advance(metrics)
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


def _plain(value: Any) -> Any:
    """Tuples become lists so that a state survives a JSON round trip unchanged."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
