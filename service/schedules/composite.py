"""SequentialLR and ChainedScheduler (torch's §15–17): schedulers made of schedulers.

The children share the composite's group list (one optimizer in torch), so each
child reads what the others left in the groups. Construction and stepping follow
torch 2.13.0 to the letter, quirks included (nested composites un-step their
grandchildren twice; a chain's construction step runs its children's *normal*
steps), because 2.13.0 is the oracle. The registry builds the children and hands
them over; a composite's state is its own fields plus ``"schedulers"``: the
children's own states, in order.
"""

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.schedules.base import Captured, Group, Metrics, ScheduleEvent, Scheduler
from service.schedules.errors import InvalidConfig
from service.schedules.plateau import ReduceLROnPlateau


def _is_metric_driven_leaf(child: Scheduler) -> bool:
    """ReduceLROnPlateau and LRRangeTest: each step needs a metric, which torch never passes."""
    return getattr(type(child), "default_monitor", None) is not None


class _Composite(Scheduler):
    """What both composites share: children, state nesting, events and flags bubbling up."""

    state_fields = ("last_epoch",)

    def __init__(self, groups: list[Group], children: list[Scheduler]) -> None:
        super().__init__(groups)
        self.children = children
        # Facts of the children, fixed once they are built; read at every step.
        self.uses_metric = any(child.uses_metric for child in children)
        self.cycles_momentum = any(child.cycles_momentum for child in children)
        # One event list for the whole tree: draining the root reports every event.
        for child in children:
            child.share_event_sink(self._pending_events)

    def share_event_sink(self, sink: list[ScheduleEvent]) -> None:
        super().share_event_sink(sink)
        for child in self.children:
            child.share_event_sink(sink)

    def capture(self) -> Captured:
        return super().capture(), [child.capture() for child in self.children]

    def rewind(self, captured: Captured) -> None:
        own, children = captured
        super().rewind(own)
        for child, child_captured in zip(self.children, children, strict=True):
            child.rewind(child_captured)

    def own_state(self) -> dict[str, Any]:
        return {
            **super().own_state(),
            "schedulers": [child.own_state() for child in self.children],
        }

    def load_own_state(self, state: Mapping[str, Any]) -> None:
        super().load_own_state(state)
        for child, child_state in zip(self.children, state["schedulers"], strict=True):
            child.load_own_state(child_state)

    def restart_at_zero(self) -> None:
        # torch 2.13.0: _update_lr(0) calls get_lr(), which composites do not implement.
        # check_restart_at_zero refuses every config that could get here.
        raise NotImplementedError(f"{self.type_name} cannot restart at a milestone")

    def check_restart_at_zero(self) -> None:
        raise InvalidConfig(
            ("type",),
            f"a {self.type_name} cannot be a SequentialLR child that a milestone reaches: "
            "torch 2.13.0 raises NotImplementedError there",
        )

    def undo_construction_steps(self) -> None:
        """torch's ``recursive_undo``: every leaf below loses one step; composites keep theirs."""
        for child in self.children:
            if isinstance(child, _Composite):
                child.undo_construction_steps()
            else:
                child.last_epoch -= 1


class SequentialLR(_Composite):
    """Runs one child at a time, switching to the next at each milestone.

    ConstantLR(factor 0.1, total_iters 20) then ExponentialLR(0.9), milestones [20], lr 0.05:
    0.005 for epochs 0–19, 0.05 at 20, 0.045 at 21, 0.0405 at 22, …

    At a milestone the new child restarts from epoch 0 by its closed form (torch's
    ``_update_lr(0)``), later steps are its ordinary steps. Milestones are neither
    sorted nor checked for sign, duplicates let the later child win: all as torch.

    Beyond torch: a ReduceLROnPlateau may be the LAST child (nowhere else). At its
    milestone it takes over from the lr the previous child left (no restart to
    epoch 0): from the milestone step on, every step is the plateau's step with its
    metric, so metrics are needed only from the milestone on. If the milestones make
    it active from construction, it starts from the groups' ``initial_lr``.

    Refused at creation, where torch would only crash at the milestone: a composite
    or a LinearLR/PolynomialLR with ``total_iters=0`` as a child a milestone reaches.
    """

    type_name = "SequentialLR"

    @dataclass(frozen=True)
    class Params:
        schedulers: list[dict]
        milestones: list[int]

    def __init__(self, groups: list[Group], params: Params, children: list[Scheduler]) -> None:
        super().__init__(groups, children)
        if not children:
            raise InvalidConfig(
                ("params", "schedulers"),
                "SequentialLR expects at least one scheduler, but got no scheduler.",
            )
        last = len(children) - 1
        for index, child in enumerate(children):
            if _is_metric_driven_leaf(child) and not (self._takes_over(child) and index == last):
                raise InvalidConfig(
                    ("params", "schedulers", index, "type"),
                    f"SequentialLR does not support {child.type_name} here: it needs a metric "
                    "at every step (a ReduceLROnPlateau is allowed as the last child only)",
                )
        if len(params.milestones) != len(children) - 1:
            raise InvalidConfig(
                ("params", "milestones"),
                "Sequential Schedulers expects number of schedulers provided to be one more "
                "than the number of milestone points, but got number of schedulers "
                f"{len(children)} and the number of milestones to be equal to "
                f"{len(params.milestones)}",
            )
        self.milestones = list(params.milestones)
        for index in range(1, len(children)):
            if self._restarted_at_milestone(index) and not self._takes_over(children[index]):
                try:
                    children[index].check_restart_at_zero()
                except InvalidConfig as exc:
                    raise exc.nested("params", "schedulers", index) from None

    def _restarted_at_milestone(self, index: int) -> bool:
        """Whether some step e ≥ 1 selects child ``index`` exactly at its milestone."""
        milestone = self.milestones[index - 1]
        return milestone >= 1 and bisect_right(self.milestones, milestone) == index

    @staticmethod
    def _takes_over(child: Scheduler) -> bool:
        # hf:reduce_lr_on_plateau is one too (a subclass): the same rules hold for it.
        return isinstance(child, ReduceLROnPlateau)

    def start(self) -> None:
        for child in self.children:
            child.start()
        self.last_epoch = 0
        for group in self.groups:
            # Only a lone ReduceLROnPlateau child leaves the groups without initial_lr.
            if "initial_lr" in group:
                group["lr"] = group["initial_lr"]
        self.undo_construction_steps()
        selected = self.children[bisect_right(self.milestones, 0)]
        if not self._takes_over(selected):
            selected._initial_step()

    def _advance(self, metrics: Metrics) -> None:
        epoch = self.last_epoch + 1
        index = bisect_right(self.milestones, epoch)
        child = self.children[index]
        # Only one child acts per step and a failing child changes nothing (a plateau
        # without its metric included), so counting after it succeeded keeps a failed
        # step free of side effects.
        if index > 0 and self.milestones[index - 1] == epoch and not self._takes_over(child):
            child.restart_at_zero()
        else:
            child._advance(metrics)
        self._step_count += 1
        self.last_epoch = epoch


class ChainedScheduler(_Composite):
    """Steps every child in list order each step; each reads the lr the previous one left.

    ConstantLR(factor 0.1, total_iters 2) with ExponentialLR(0.9) on lr 1.0:
    0.1, 0.09, 0.81, 0.729, … Non-chainable children (LambdaLR, CyclicLR, OneCycleLR,
    CosineAnnealingWarmRestarts) overwrite what the children before them computed.

    torch's ChainedScheduler has no step counter; ``last_epoch`` here counts its steps
    so a chain at the root reports its step like every other scheduler.
    """

    type_name = "ChainedScheduler"

    @dataclass(frozen=True)
    class Params:
        schedulers: list[dict]

    def __init__(self, groups: list[Group], params: Params, children: list[Scheduler]) -> None:
        super().__init__(groups, children)
        if not children:
            raise InvalidConfig(
                ("params", "schedulers"),
                "ChainedScheduler expects at least one scheduler to be chained, but got no "
                "scheduler.",
            )
        for index, child in enumerate(children):
            if _is_metric_driven_leaf(child):
                raise InvalidConfig(
                    ("params", "schedulers", index, "type"),
                    f"ChainedScheduler does not support {child.type_name}: it requires a "
                    "metric when calling `step`",
                )

    def start(self) -> None:
        # torch's constructor touches nothing: the children's construction steps are all.
        for child in self.children:
            child.start()
        self.last_epoch = 0

    def _advance(self, metrics: Metrics) -> None:
        """Every child steps; if one fails, those before it are put back as they were.

        A failing child leaves itself unchanged, but the children before it have stepped:
        their fields (``capture``), the groups' values and the events they emitted are
        restored. Shallow copies of the groups suffice: a step replaces values, it never
        mutates one in place (momentum ``betas`` are written as new lists).
        """
        children = self.children
        groups = self.groups
        saved_groups = [group.copy() for group in groups]
        saved_children = [child.capture() for child in children]
        event_count = len(self._pending_events)
        try:
            for child in children:
                child._advance(metrics)
        except BaseException:
            for child, captured in zip(children, saved_children, strict=True):
                child.rewind(captured)
            groups[:] = saved_groups
            del self._pending_events[event_count:]
            raise
        self._step_count += 1
        self.last_epoch += 1
