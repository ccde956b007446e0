"""SequentialLR and ChainedScheduler against real torch 2.13.0, nested quirks included.

Same harness as test_decay: a few hundred steps, hand edits of the lr, restores
from JSON-dumped state mid-run, values compared by ``repr``. The one behaviour
beyond torch (ReduceLROnPlateau as SequentialLR's last child) is checked against
torch's own SequentialLR and ReduceLROnPlateau driven by hand the way the
engine documents it.
"""

import copy
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from torch.optim import lr_scheduler

from service.schedules import InvalidConfig, InvalidStepValue, MissingMetric, build
from tests.schedules.test_decay import as_reprs, engine_run
from tests.schedules.torch_oracle import make_optimizer, make_scheduler, run_in_torch

pytestmark = pytest.mark.torch

SGD_GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.013, "momentum": 0.0}]
ADAM_GROUPS = [{"lr": 0.003, "betas": [0.9, 0.999]}, {"lr": 0.02, "betas": [0.8, 0.99]}]
STEPS = 300
EDITS = {0: [0.2, 0.02], 37: [0.07, 0.002], 160: [0.5, 0.01]}
RESTORE_AT = (1, 5, 11, 57, 161, 233)


def config(type_name: str, **params: Any) -> dict[str, Any]:
    return {"type": type_name, "params": params}


def sequential(children: list[dict[str, Any]], milestones: list[int]) -> dict[str, Any]:
    return config("SequentialLR", schedulers=children, milestones=milestones)


def chained(children: list[dict[str, Any]]) -> dict[str, Any]:
    return config("ChainedScheduler", schedulers=children)


CONSTANT = config("ConstantLR", factor=0.1, total_iters=20)
EXPONENTIAL = config("ExponentialLR", gamma=0.99)
LINEAR = config("LinearLR", start_factor=0.05, total_iters=10)
COSINE = config("CosineAnnealingLR", T_max=100, eta_min=0.001)
STEP = config("StepLR", step_size=30, gamma=0.5)
LAMBDA = config("LambdaLR", lr_lambda="0.97 ** epoch")
MULTIPLICATIVE = config("MultiplicativeLR", lr_lambda="0.5 + 0.49 * 0.99 ** epoch")

COMPOSITE_CASES = {
    "constant_then_exponential": sequential([CONSTANT, EXPONENTIAL], [20]),
    "warmup_cosine_step": sequential([LINEAR, COSINE, STEP], [10, 110]),
    "multiplicative_restarts_from_the_current_lr": sequential([STEP, MULTIPLICATIVE], [45]),
    "lambda_restarts_from_base": sequential([EXPONENTIAL, LAMBDA], [45]),
    "every_decay_child": sequential(
        [
            config("ConstantLR", factor=0.5, total_iters=3),
            config("LinearLR", start_factor=0.2, end_factor=0.9, total_iters=20),
            config("MultiStepLR", milestones=[0, 5, 5, 9], gamma=0.8),
            config("PolynomialLR", total_iters=40, power=1.5),
            config("ExponentialLR", gamma=1.01),
            config("StepLR", step_size=4, gamma=0.9),
            config("ConstantLR", factor=0.25, total_iters=10),
        ],
        [7, 30, 50, 100, 130, 160],
    ),
    "duplicate_milestones_skip_a_composite": sequential(
        [CONSTANT, chained([EXPONENTIAL, STEP]), LAMBDA], [5, 5]
    ),
    "unsorted_milestones": sequential([EXPONENTIAL, CONSTANT, LINEAR], [100, 50]),
    "zero_and_negative_milestones": sequential([EXPONENTIAL, CONSTANT, LINEAR], [-3, 0]),
    "milestone_zero_selects_the_second_child": sequential([CONSTANT, LINEAR, STEP], [0, 90]),
    "linear_with_zero_total_iters_first": sequential(
        [config("LinearLR", start_factor=0.5, total_iters=0), EXPONENTIAL], [40]
    ),
    "chain_first_takes_normal_steps_at_construction": sequential(
        [chained([EXPONENTIAL, config("ConstantLR", factor=0.5, total_iters=7)]), LAMBDA], [30]
    ),
    "sequential_wrapping_sequential_steps_early": sequential(
        [sequential([LINEAR, EXPONENTIAL], [10])], []
    ),
    "sequential_first_in_sequential": sequential(
        [sequential([CONSTANT, EXPONENTIAL], [4]), STEP], [50]
    ),
    "chain_of_constant_and_linear": chained(
        [config("ConstantLR", factor=0.1, total_iters=12), config("LinearLR", start_factor=0.5)]
    ),
    "lambda_in_a_chain_overwrites_earlier_children": chained([EXPONENTIAL, LAMBDA, STEP]),
    "chain_holding_a_sequential": chained(
        [sequential([LINEAR, COSINE], [10]), config("ExponentialLR", gamma=0.999)]
    ),
    "warm_restarts_later_child": sequential(
        [LINEAR, config("CosineAnnealingWarmRestarts", T_0=7, T_mult=2, eta_min=0.0005)], [10]
    ),
    "one_cycle_later_child": sequential(
        [LINEAR, config("OneCycleLR", max_lr=0.3, total_steps=400)], [10]
    ),
    "cyclic_chained_with_exponential": chained(
        [config("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=13), EXPONENTIAL]
    ),
    "cyclic_built_but_inactive_keeps_its_momentum": sequential(
        [EXPONENTIAL, config("CyclicLR", base_lr=[0.01, 0.02], max_lr=0.1, step_size_up=9)],
        [120],
    ),
}


def assert_matches_torch(
    composite: Mapping[str, Any],
    param_groups: Sequence[Mapping[str, Any]],
    lr_edits: Mapping[int, Sequence[float]] | None,
) -> None:
    torch_run = run_in_torch(composite, param_groups, STEPS, lr_edits=lr_edits)
    assert torch_run.error is None, torch_run.error
    lrs, momenta = engine_run(
        composite, param_groups, STEPS, lr_edits=lr_edits, restore_at=RESTORE_AT
    )
    assert as_reprs(lrs) == as_reprs(torch_run.lr)
    assert as_reprs(momenta) == as_reprs(torch_run.momentum)


@pytest.mark.parametrize("name", COMPOSITE_CASES)
def test_composite_follows_torch_through_edits_and_restores(name: str) -> None:
    assert_matches_torch(COMPOSITE_CASES[name], SGD_GROUPS, EDITS)


@pytest.mark.parametrize("name", COMPOSITE_CASES)
def test_composite_follows_torch_undisturbed_on_adam_groups(name: str) -> None:
    assert_matches_torch(COMPOSITE_CASES[name], ADAM_GROUPS, None)


def test_state_nests_the_children_own_states_in_order() -> None:
    composite = sequential([chained([EXPONENTIAL, LAMBDA]), CONSTANT], [3])
    scheduler = build(composite, SGD_GROUPS)
    for _ in range(5):
        scheduler.step()
    state = json.loads(json.dumps(scheduler.state()))
    assert state["last_epoch"] == 5
    chain, constant = state["schedulers"]
    assert constant == {"last_epoch": 2, "base_lrs": [0.1, 0.013], "_step_count": 3}
    assert [child["last_epoch"] for child in chain["schedulers"]] == [2, 2]
    assert "param_groups" not in chain and "param_groups" in state


def test_children_events_bubble_up_to_the_step_that_caused_them() -> None:
    composite = chained(
        [sequential([LINEAR, config("CosineAnnealingWarmRestarts", T_0=4)], [2]), EXPONENTIAL]
    )
    scheduler = build(composite, SGD_GROUPS)
    steps_with_restarts = [
        step
        for step in range(1, 20)
        if any(event.kind == "warm_restart" for event in scheduler.step().events)
    ]
    # The warm-restart child starts at step 2 (its epoch 0) and restarts every 4 steps.
    assert steps_with_restarts == [6, 10, 14, 18]


# -- ReduceLROnPlateau as SequentialLR's last child (beyond torch) ---------------------


PLATEAU_PARAMS = {"factor": 0.5, "patience": 4, "threshold": 0.01, "cooldown": 2}


def plateau_metric(step: int) -> float:
    """Falls for 60 steps, then wobbles on a plateau: reductions come every few steps."""
    return max(0.3, 1.0 - step / 60) + 0.001 * ((step * 7) % 5)


def torch_plateau_after_sequence(
    before: list[dict[str, Any]],
    milestones: list[int],
    param_groups: Sequence[Mapping[str, Any]],
    steps: int,
    lr_edits: Mapping[int, Sequence[float]],
) -> list[list[float]]:
    """torch's SequentialLR over the children before the plateau, then torch's plateau by hand.

    The plateau is constructed last (it changes nothing); up to the last milestone the
    SequentialLR steps, from it on the plateau steps with the metric.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = make_optimizer(param_groups)
        children = [make_scheduler(child, optimizer) for child in before]
        sequence = lr_scheduler.SequentialLR(optimizer, children, milestones[:-1])
        plateau = lr_scheduler.ReduceLROnPlateau(optimizer, **PLATEAU_PARAMS)
        lrs = []
        for step in range(steps + 1):
            if step > 0:
                if step >= milestones[-1]:
                    plateau.step(plateau_metric(step))
                else:
                    sequence.step()
            lrs.append([group["lr"] for group in optimizer.param_groups])
            for group, lr in zip(optimizer.param_groups, lr_edits.get(step, []), strict=False):
                group["lr"] = lr
    return lrs


@pytest.mark.parametrize(
    ("before", "milestones"),
    [([CONSTANT], [50]), ([LINEAR, COSINE], [10, 80]), ([COSINE, STEP], [40, 41])],
    ids=["after_constant", "after_warmup_and_cosine", "right_after_a_milestone"],
)
def test_plateau_last_child_takes_over_the_lr_left_before_it(
    before: list[dict[str, Any]], milestones: list[int]
) -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": PLATEAU_PARAMS}
    composite = sequential([*before, plateau], milestones)
    # Before the plateau's milestone no metric is needed: send none on most of those steps.
    metrics = [
        {"val_loss": plateau_metric(step)} if step >= milestones[-1] or step % 3 == 0 else None
        for step in range(1, STEPS + 1)
    ]
    lrs, _ = engine_run(
        composite, SGD_GROUPS, STEPS, metrics=metrics, lr_edits=EDITS, restore_at=RESTORE_AT
    )
    expected = torch_plateau_after_sequence(before, milestones, SGD_GROUPS, STEPS, EDITS)
    assert as_reprs(lrs) == as_reprs(expected)
    assert lrs[-1] != lrs[milestones[-1]], "the case never reduced the lr"


def test_plateau_active_from_construction_starts_from_initial_lr() -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": PLATEAU_PARAMS, "monitor": "loss"}
    scheduler = build(sequential([CONSTANT, plateau], [0]), SGD_GROUPS)
    assert scheduler.outcome().lr == [0.1, 0.013]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = make_optimizer(SGD_GROUPS)
        torch_plateau = lr_scheduler.ReduceLROnPlateau(optimizer, **PLATEAU_PARAMS)
    for step in range(1, 150):
        outcome = scheduler.step({"loss": plateau_metric(step)})
        torch_plateau.step(plateau_metric(step))
        assert outcome.lr == [group["lr"] for group in optimizer.param_groups]


def test_plateau_last_child_needs_the_metric_from_its_milestone_on() -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {}}
    scheduler = build(sequential([CONSTANT, plateau], [4]), SGD_GROUPS)
    assert scheduler.uses_metric
    for _ in range(3):
        scheduler.step()
    with pytest.raises(MissingMetric):
        scheduler.step()
    with pytest.raises(MissingMetric):
        scheduler.step({"other": 1.0})


def test_plateau_reductions_bubble_up_as_events() -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {"patience": 0}}
    scheduler = build(sequential([CONSTANT, plateau], [2]), SGD_GROUPS)
    scheduler.step()
    kinds = [[event.kind for event in scheduler.step({"val_loss": 1.0}).events] for _ in range(3)]
    assert kinds == [[], ["plateau_reduction"], ["plateau_reduction"]]


def test_plateau_last_child_of_an_inner_sequential_runs_inside_a_chain() -> None:
    """Only direct children are checked, as in torch: the chain passes the metric down."""
    plateau = {"type": "ReduceLROnPlateau", "params": {"patience": 0}}
    scheduler = build(chained([sequential([CONSTANT, plateau], [2])]), SGD_GROUPS)
    scheduler.step()
    lr_before = scheduler.lrs()
    scheduler.step({"val_loss": 1.0})
    assert scheduler.step({"val_loss": 1.0}).lr == [lr * 0.1 for lr in lr_before]


# -- refusals ------------------------------------------------------------------------


PLATEAU = {"type": "ReduceLROnPlateau", "params": {}}
RANGE_TEST = {"type": "LRRangeTest", "params": {"start_lr": 1e-5, "end_lr": 1.0, "num_steps": 10}}


@pytest.mark.parametrize(
    ("composite", "loc"),
    [
        (sequential([], []), ("params", "schedulers")),
        (chained([]), ("params", "schedulers")),
        (sequential([CONSTANT, EXPONENTIAL], []), ("params", "milestones")),
        (sequential([CONSTANT], [3]), ("params", "milestones")),
        (sequential([PLATEAU, EXPONENTIAL], [5]), ("params", "schedulers", 0, "type")),
        (chained([EXPONENTIAL, PLATEAU]), ("params", "schedulers", 1, "type")),
        (sequential([CONSTANT, RANGE_TEST], [5]), ("params", "schedulers", 1, "type")),
        (chained([RANGE_TEST]), ("params", "schedulers", 0, "type")),
        (
            sequential([EXPONENTIAL, chained([CONSTANT])], [5]),
            ("params", "schedulers", 1, "type"),
        ),
        (
            sequential([EXPONENTIAL, STEP, sequential([CONSTANT], [])], [5, 9]),
            ("params", "schedulers", 2, "type"),
        ),
        (
            sequential([EXPONENTIAL, config("LinearLR", total_iters=0)], [5]),
            ("params", "schedulers", 1, "params", "total_iters"),
        ),
        (
            sequential([EXPONENTIAL, config("PolynomialLR", total_iters=0)], [1]),
            ("params", "schedulers", 1, "params", "total_iters"),
        ),
        (
            sequential([EXPONENTIAL, config("PolynomialLR", total_iters=-2, power=-1.0)], [1]),
            ("params", "schedulers", 1, "params", "power"),
        ),
        (
            sequential([EXPONENTIAL, config("MultiplicativeLR", lr_lambda="1 / epoch")], [8]),
            ("params", "schedulers", 1, "params", "lr_lambda"),
        ),
    ],
    ids=lambda value: (
        json.dumps(value)[:80] if isinstance(value, dict) else ".".join(map(str, value))
    ),
)
def test_refused_composites_name_the_field(composite: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidConfig) as caught:
        build(composite, SGD_GROUPS)
    assert caught.value.loc == ("scheduler", *loc)


@pytest.mark.parametrize(
    ("composite", "error_type"),
    [
        (sequential([EXPONENTIAL, chained([CONSTANT])], [5]), "NotImplementedError"),
        (sequential([EXPONENTIAL, config("LinearLR", total_iters=0)], [5]), "ZeroDivisionError"),
        (
            sequential([EXPONENTIAL, config("PolynomialLR", total_iters=0)], [1]),
            "ZeroDivisionError",
        ),
        (
            sequential([EXPONENTIAL, config("MultiplicativeLR", lr_lambda="1 / epoch")], [8]),
            "ZeroDivisionError",
        ),
    ],
    ids=["composite_child", "linear_zero_total", "polynomial_zero_total", "multiplicative_zero"],
)
def test_refused_later_children_are_those_torch_crashes_on_at_the_milestone(
    composite: dict[str, Any], error_type: str
) -> None:
    torch_run = run_in_torch(composite, SGD_GROUPS, 20)
    assert torch_run.error is not None
    assert torch_run.error.step == composite["params"]["milestones"][-1]
    assert torch_run.error.type == error_type


def test_construction_that_crashes_torch_is_refused() -> None:
    """A chain first in a SequentialLR steps normally at epoch 0: PolynomialLR(0) divides by 0."""
    composite = sequential([chained([config("PolynomialLR", total_iters=0)])], [])
    torch_run = run_in_torch(composite, SGD_GROUPS, 1)
    assert torch_run.error is not None and torch_run.error.step == 0
    with pytest.raises(InvalidConfig) as caught:
        build(composite, SGD_GROUPS)
    assert caught.value.loc == ("scheduler",)


def test_refusal_does_not_touch_the_callers_groups() -> None:
    groups = copy.deepcopy(SGD_GROUPS)
    with pytest.raises(InvalidConfig):
        build(sequential([CONSTANT, PLATEAU, EXPONENTIAL], [3, 6]), groups)
    assert groups == SGD_GROUPS


def test_missing_metric_leaves_the_sequence_as_it_was() -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {"patience": 0}}
    scheduler = build(sequential([CONSTANT, plateau], [2]), SGD_GROUPS)
    scheduler.step()
    before = scheduler.state()
    with pytest.raises(MissingMetric):
        scheduler.step()
    assert scheduler.state() == before
    assert scheduler.step({"val_loss": 1.0}).step == 2


def test_failing_later_child_of_a_chain_puts_the_earlier_children_back() -> None:
    failing = config("LambdaLR", lr_lambda="1 / (epoch - 3)")
    scheduler = build(chained([EXPONENTIAL, failing]), SGD_GROUPS)
    for _ in range(2):
        scheduler.step()
    before = scheduler.state()
    with pytest.raises(InvalidStepValue) as caught:
        scheduler.step()
    assert caught.value.step == 3
    assert scheduler.state() == before


def test_failing_chain_step_puts_back_adam_betas_and_drops_the_events_it_emitted() -> None:
    restarting = config("CosineAnnealingWarmRestarts", T_0=1)  # a warm restart every step
    cyclic = config("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=3)
    failing = config("LambdaLR", lr_lambda="1 / (epoch - 3)")
    scheduler = build(chained([restarting, cyclic, failing]), ADAM_GROUPS)
    for _ in range(2):
        assert [event.kind for event in scheduler.step().events] == ["warm_restart"]
    before = scheduler.state()
    with pytest.raises(InvalidStepValue):
        scheduler.step()
    assert scheduler.state() == before
    assert scheduler.outcome().events == []


def test_events_of_every_nesting_level_reach_the_root_once() -> None:
    restarting = config("CosineAnnealingWarmRestarts", T_0=1)
    scheduler = build(chained([sequential([restarting], []), restarting]), SGD_GROUPS)
    assert [event.kind for event in scheduler.step().events] == ["warm_restart"] * 2
    assert scheduler.outcome().events == []
