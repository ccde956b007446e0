"""The scheduler base: torch's ``LRScheduler`` template method, without torch.

A scheduler holds the param groups (plain dicts, mutated in place exactly like
``optimizer.param_groups``), ``base_lrs`` and ``last_epoch``. ``start()`` does
what torch's constructor does to the groups (``initial_lr``, the initial step);
``step()`` advances one step by the subclass's chainable ``get_lr()``; ``state()``
and ``load_state()`` carry the declared fields, so a scheduler rebuilt from its
config and state continues bit-exactly in another process.

Subclasses declare ``type_name``, the extra ``state_fields`` (torch's attribute
names) and implement ``get_lr()``; metric-driven or momentum-cycling ones set
``uses_metric`` / ``cycles_momentum`` and override ``_advance``.

``step()`` is the service's hot path (and the benchmark's), so the per-step code
avoids what Python makes expensive: keyword construction of the outcome, property
and ``super()`` calls, generator expressions, copies made "just in case", and
``zip(..., strict=True)`` (any keyword argument sends ``zip`` down CPython's slow
constructor path, about as costly as the loop itself): per-step loops over the
groups index the other per-group lists instead, which have one entry per group by
construction. Facts that cannot change after construction (whether momentum
cycles, the attributes a step may change) are worked out once.
"""

import sys
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter, itemgetter
from typing import Any, ClassVar, NamedTuple

from service.schedules.codec import decode_floats, encode_floats
from service.schedules.errors import ExpressionError, InvalidStepValue, MissingMetric

Group = dict[str, Any]
Metrics = float | Mapping[str, float] | None
# What ``capture()`` returns: opaque to everyone but ``rewind()``.
Captured = Any

_read_lr = itemgetter("lr")
# An int lr (torch keeps a group's int lr an int: 5 × an int factor stays exact) past
# this is one no optimizer can use (float() of it overflows), nor JSON store.
_LARGEST_FLOAT_INT = int(sys.float_info.max)


class ScheduleEvent(NamedTuple):
    """Something worth a line in the run's history (plateau reduction, warm restart, ...).

    Immutable; a named tuple rather than a frozen dataclass, whose constructor costs
    twice as much (a plateau can reduce at every few steps).
    """

    kind: str
    detail: dict[str, Any]


class StepOutcome(NamedTuple):
    """What one step (or the construction, step 0) left in the groups.

    A named tuple, because every step builds one: the engine builds it with
    ``tuple.__new__`` (see ``_outcome``), in C, where a dataclass (or this class's own
    generated ``__new__``) runs a Python-level constructor that costs as much as a
    cheap schedule's whole step.
    """

    step: int
    lr: list[float]
    momentum: list[float] | None
    events: list[ScheduleEvent]
    stop: bool | None


_outcome = tuple.__new__


def read_metric(metrics: Metrics, monitor: str) -> float:
    """The monitored value: a bare number is taken as-is (torch's ``step(val_loss)``)."""
    if type(metrics) is dict:  # the service's shape, so the first thing tried
        try:
            return float(metrics[monitor])
        except KeyError:
            raise MissingMetric(monitor) from None
    if metrics is None:
        raise MissingMetric(monitor)
    if isinstance(metrics, (int, float)):
        return float(metrics)
    try:
        return float(metrics[monitor])
    except KeyError:
        raise MissingMetric(monitor) from None


def group_momenta(groups: Sequence[Group]) -> list[float]:
    """SGD's ``momentum`` or Adam's ``betas[0]``, per group: what a cycling schedule moves."""
    return [group["betas"][0] if "betas" in group else group["momentum"] for group in groups]


class Scheduler:
    type_name: ClassVar[str] = ""
    # Attribute names (torch's) saved by state(); subclasses extend the tuple.
    state_fields: ClassVar[tuple[str, ...]] = ("last_epoch", "base_lrs", "_step_count")
    # Whether some step of this schedule reads a metric (no catch-up across gaps then):
    # a class fact, or (composites) fixed by the constructor.
    uses_metric: bool = False
    # What a step may change: every state field and the step count (which not every class
    # saves). Recomputed for each subclass by __init_subclass__; see capture().
    _changed_by_step: ClassVar[tuple[str, ...]] = ("last_epoch", "base_lrs", "_step_count")
    _read_changed_by_step: ClassVar[Callable[[Any], tuple[Any, ...]]] = attrgetter(
        *_changed_by_step
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # At least two names (last_epoch, _step_count), so the getter returns a tuple.
        cls._changed_by_step = tuple(dict.fromkeys((*cls.state_fields, "_step_count")))
        cls._read_changed_by_step = attrgetter(*cls._changed_by_step)

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self.last_epoch = -1
        self.base_lrs: list[float] = []
        self._step_count = 0
        self._is_initial = False
        # Read by every step, so instance attributes (the cheapest lookup). Whether the
        # schedule writes momentum: the cycling classes and composites set it.
        self.cycles_momentum = False
        # The ``stop`` a step reports: None for every schedule but the range test, whose
        # state field of this name turns True once the loss has diverged.
        self.stopped: bool | None = None
        # Shared with every scheduler nested below a composite (see share_event_sink).
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

        ``get_lr()`` computes every value before a group is written and never touches
        the counters, so counting back is all a failed step needs to leave the
        scheduler as it was.
        """
        self._step_count += 1
        self.last_epoch += 1
        try:
            values = self.get_lr()
        except BaseException:
            self._step_count -= 1
            self.last_epoch -= 1
            raise
        for index, group in enumerate(self.groups):
            group["lr"] = values[index]

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
        (those, ``MissingMetric``, ``StepPastEnd``) leaves the scheduler as it was, but
        for one: an int lr grown past the float range (torch keeps int lrs exact; its
        optimizer fails on this one with OverflowError) fails the step after the groups
        were written, since the service discards a scheduler whose step failed.
        """
        attempted = self.last_epoch + 1
        try:
            self._advance(metrics)
        except (ArithmeticError, ExpressionError) as exc:
            parameter = exc.parameter if isinstance(exc, ExpressionError) else None
            raise InvalidStepValue(attempted, describe_failure(exc), parameter) from exc
        except InvalidStepValue as exc:
            if exc.step == attempted:
                raise
            raise InvalidStepValue(attempted, exc.reason, exc.parameter) from exc
        # outcome(), inlined: a call more is a few percent of the cheapest steps.
        groups = self.groups
        lrs = [*map(_read_lr, groups)]
        for lr in lrs:
            if lr.__class__ is int and not -_LARGEST_FLOAT_INT <= lr <= _LARGEST_FLOAT_INT:
                raise InvalidStepValue(
                    attempted,
                    "the lr is an integer too large for a float (torch's optimizer fails on it)",
                )
        return _outcome(
            StepOutcome,
            (
                self.last_epoch,
                lrs,
                group_momenta(groups) if self.cycles_momentum else None,
                self.drain_events() if self._pending_events else [],
                self.stopped,
            ),
        )

    def outcome(self) -> StepOutcome:
        """What the groups hold now, and the events not reported yet (step 0 after build)."""
        groups = self.groups
        return _outcome(
            StepOutcome,
            (
                self.last_epoch,
                [*map(_read_lr, groups)],
                group_momenta(groups) if self.cycles_momentum else None,
                self.drain_events() if self._pending_events else [],
                self.stopped,
            ),
        )

    # -- what the groups hold -------------------------------------------------
    def lrs(self) -> list[float]:
        return [*map(_read_lr, self.groups)]

    def momenta(self) -> list[float] | None:
        return group_momenta(self.groups) if self.cycles_momentum else None

    def set_lr(self, lrs: Sequence[float]) -> None:
        """A hand edit of ``param_groups[i]["lr"]``: later chainable steps start from it."""
        for group, lr in zip(self.groups, lrs, strict=True):
            group["lr"] = lr

    # -- events ---------------------------------------------------------------
    def emit(self, kind: str, detail: dict[str, Any]) -> None:
        self._pending_events.append(ScheduleEvent(kind, detail))

    def drain_events(self) -> list[ScheduleEvent]:
        """The events since the last drain, in the order they happened, nested ones included."""
        pending = self._pending_events
        if not pending:
            return []
        events = pending.copy()
        pending.clear()  # in place: the list may be shared with nested schedulers
        return events

    def share_event_sink(self, sink: list[ScheduleEvent]) -> None:
        """Emit into ``sink`` from now on: a composite hands its list to everything below it,
        so draining the root collects every event without walking the tree each step."""
        self._pending_events = sink

    # -- undoing a step that failed half-way (see ChainedScheduler) -----------
    def capture(self) -> Captured:
        """What ``rewind()`` needs to put this scheduler back as it is now.

        A step replaces the values of the state fields (it never mutates them in place),
        so their references are enough; the groups are the caller's to capture.
        """
        return self._read_changed_by_step(self)

    def rewind(self, captured: Captured) -> None:
        for name, value in zip(self._changed_by_step, captured, strict=True):
            setattr(self, name, value)

    # -- state ----------------------------------------------------------------
    def own_state(self) -> dict[str, Any]:
        """The declared fields, JSON-able (composites add their children's)."""
        return {name: encode_floats(getattr(self, name)) for name in self.state_fields}

    def load_own_state(self, state: Mapping[str, Any]) -> None:
        """Put the declared fields back; only those are decoded (a root state also holds the
        groups, a composite's its children's states: each is decoded once, by its owner)."""
        for name in self.state_fields:
            setattr(self, name, decode_floats(state[name]))

    def state(self) -> dict[str, Any]:
        """The whole state of a root scheduler: its fields plus the groups as it left them."""
        return {**self.own_state(), "param_groups": encode_floats(self.groups)}


def describe_failure(exc: BaseException) -> str:
    """``OverflowError: (34, 'Numerical result out of range')`` rather than the bare tuple."""
    if isinstance(exc, ExpressionError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
