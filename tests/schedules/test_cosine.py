"""CosineAnnealingLR and CosineAnnealingWarmRestarts against real torch 2.13.0, float for float."""

import copy
import random
import warnings
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

from service.schedules import registry
from service.schedules.cosine import CosineAnnealingLR, CosineAnnealingWarmRestarts
from service.schedules.errors import InvalidConfig
from tests.schedules.engine_harness import build, restore
from tests.schedules.torch_oracle import make_optimizer, run_in_torch

pytestmark = pytest.mark.torch

Groups = list[dict[str, Any]]
SchedulerClass = type[CosineAnnealingLR] | type[CosineAnnealingWarmRestarts]


def random_groups(rng: random.Random) -> Groups:
    """1–4 groups with different lrs, SGD-like (momentum) or Adam-like (betas)."""
    count = rng.randint(1, 4)
    adam_like = rng.random() < 0.5
    groups = []
    for _ in range(count):
        group: dict[str, Any] = {"lr": rng.choice([0.1, 0.003, 1.0, rng.uniform(1e-4, 0.5)])}
        if adam_like:
            group["betas"] = [0.9, 0.999]
        else:
            group["momentum"] = 0.9
        groups.append(group)
    return groups


def engine_lrs(
    scheduler_class: SchedulerClass,
    groups: Groups,
    steps: int,
    lr_edits: dict[int, list[float]] | None = None,
    restore_at: int | None = None,
    **params: Any,
) -> list[list[float]]:
    """What the engine's groups hold after construction and each step, like run_in_torch."""
    edits = lr_edits or {}
    scheduler = build(scheduler_class, copy.deepcopy(groups), **params)
    recorded = [scheduler.lrs()]
    if 0 in edits:
        scheduler.set_lr(edits[0])
    for step in range(1, steps + 1):
        if step == restore_at:
            scheduler = restore(scheduler_class, groups, scheduler.state(), **params)
        scheduler.step()
        recorded.append(scheduler.lrs())
        if step in edits:
            scheduler.set_lr(edits[step])
    return recorded


def torch_lrs(type_name: str, groups: Groups, steps: int, **params: Any) -> list[list[float]]:
    run = run_in_torch({"type": type_name, "params": params}, groups, steps)
    assert run.error is None, run.error
    return run.lr


# -- CosineAnnealingLR ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_cosine_annealing_matches_torch_over_thousands_of_steps(seed: int) -> None:
    rng = random.Random(seed)
    groups = random_groups(rng)
    params = {
        "T_max": rng.choice([1, 2, 7, 50, 333, -5]),
        "eta_min": rng.choice([0.0, 1e-5, 0.01, 0.7]),
    }
    expected = torch_lrs("CosineAnnealingLR", groups, 3000, **params)
    assert engine_lrs(CosineAnnealingLR, groups, 3000, **params) == expected


def test_cosine_annealing_follows_the_recursion_where_the_closed_form_drifts() -> None:
    groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.037, "momentum": 0.9}]
    expected = torch_lrs("CosineAnnealingLR", groups, 400, T_max=37, eta_min=0.001)
    scheduler = build(CosineAnnealingLR, copy.deepcopy(groups), T_max=37, eta_min=0.001)
    drifted = 0
    for step in range(1, 401):
        scheduler.step()
        assert scheduler.lrs() == expected[step]
        drifted += scheduler.closed_form_lr() != expected[step]
    assert drifted > 0


def test_cosine_annealing_reaches_eta_min_exactly_at_t_max_and_climbs_back() -> None:
    scheduler = build(CosineAnnealingLR, [{"lr": 0.1}], T_max=10, eta_min=0.001)
    lrs = [scheduler.step().lr[0] for _ in range(20)]
    assert lrs[9] == 0.001
    assert lrs[19] > 0.09


def test_cosine_annealing_continues_from_hand_edited_lrs_as_torch() -> None:
    groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.0}]
    edits = {0: [0.05, 0.02], 13: [0.3, 0.001], 40: [0.0, 0.5], 41: [0.2, 0.2]}
    run = run_in_torch(
        {"type": "CosineAnnealingLR", "params": {"T_max": 20, "eta_min": 0.001}},
        groups,
        120,
        lr_edits=edits,
    )
    assert run.error is None
    assert engine_lrs(CosineAnnealingLR, groups, 120, edits, T_max=20, eta_min=0.001) == run.lr


@pytest.mark.parametrize("restore_at", [1, 17, 21, 500])
def test_cosine_annealing_restored_mid_run_continues_bit_exactly(restore_at: int) -> None:
    groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.003, "momentum": 0.9}]
    expected = torch_lrs("CosineAnnealingLR", groups, 1000, T_max=20, eta_min=1e-4)
    assert (
        engine_lrs(CosineAnnealingLR, groups, 1000, restore_at=restore_at, T_max=20, eta_min=1e-4)
        == expected
    )


@pytest.mark.parametrize("steps_before", [0, 5, 20, 21, 63])
def test_cosine_annealing_restart_at_zero_uses_torch_closed_form(steps_before: int) -> None:
    """A SequentialLR milestone calls ``_update_lr(0)``: the closed form at epoch 0."""
    groups = [{"lr": 0.003, "momentum": 0.9}, {"lr": 0.1, "momentum": 0.9}]
    optimizer = make_optimizer(groups)
    scheduler = build(CosineAnnealingLR, copy.deepcopy(groups), T_max=20, eta_min=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = lr_scheduler.CosineAnnealingLR(optimizer, T_max=20, eta_min=0.02)
        for _ in range(steps_before):
            oracle.step()
            scheduler.step()
        oracle._update_lr(0)
        scheduler.restart_at_zero()
        assert scheduler.lrs() == [group["lr"] for group in optimizer.param_groups]
        for _ in range(30):
            oracle.step()
            scheduler.step()
            assert scheduler.lrs() == [group["lr"] for group in optimizer.param_groups]


def test_cosine_annealing_leaves_lrs_untouched_at_construction() -> None:
    scheduler = build(CosineAnnealingLR, [{"lr": 0.1, "momentum": 0.9}], T_max=5)
    assert scheduler.outcome().lr == [0.1]
    assert scheduler.groups[0]["initial_lr"] == 0.1


def test_cosine_annealing_refuses_t_max_zero_naming_the_field() -> None:
    run = run_in_torch({"type": "CosineAnnealingLR", "params": {"T_max": 0}}, [{"lr": 0.1}], 1)
    assert run.error is not None and run.error.type == "ZeroDivisionError"
    with pytest.raises(InvalidConfig) as refused:
        CosineAnnealingLR([{"lr": 0.1}], CosineAnnealingLR.Params(T_max=0))
    assert refused.value.loc == ("params", "T_max")


# -- CosineAnnealingWarmRestarts --------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_warm_restarts_match_torch_over_thousands_of_steps(seed: int) -> None:
    rng = random.Random(100 + seed)
    groups = random_groups(rng)
    params = {
        "T_0": rng.choice([1, 2, 3, 10, 49]),
        "T_mult": rng.choice([1, 1, 2, 3]),
        "eta_min": rng.choice([0.0, 1e-5, 0.02, 0.6]),
    }
    expected = torch_lrs("CosineAnnealingWarmRestarts", groups, 3000, **params)
    assert engine_lrs(CosineAnnealingWarmRestarts, groups, 3000, **params) == expected


def test_warm_restarts_construction_value_is_torchs_not_base() -> None:
    """η + (base − η)·2/2 is not always base: 0.003 with η 0.02 gives 0.002999999999999999."""
    scheduler = build(CosineAnnealingWarmRestarts, [{"lr": 0.003}], T_0=5, eta_min=0.02)
    assert scheduler.outcome().lr == [0.002999999999999999]
    assert (
        scheduler.outcome().lr
        == torch_lrs("CosineAnnealingWarmRestarts", [{"lr": 0.003}], 0, T_0=5, eta_min=0.02)[0]
    )


def test_warm_restarts_ignore_hand_edits_as_torch_does() -> None:
    groups = [{"lr": 0.1, "momentum": 0.9}]
    edits = {3: [0.5], 7: [0.01]}
    run = run_in_torch(
        {"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 4, "T_mult": 2}},
        groups,
        40,
        lr_edits=edits,
    )
    assert engine_lrs(CosineAnnealingWarmRestarts, groups, 40, edits, T_0=4, T_mult=2) == run.lr


def test_warm_restart_event_names_new_period_and_step() -> None:
    scheduler = build(CosineAnnealingWarmRestarts, [{"lr": 0.1}], T_0=2, T_mult=2)
    restarts = {}
    for step in range(1, 31):
        events = scheduler.step().events
        if events:
            [event] = events
            assert event.kind == "warm_restart"
            restarts[step] = event.detail
    assert restarts == {
        2: {"T_i": 4, "T_cur": 0, "step": 2},
        6: {"T_i": 8, "T_cur": 0, "step": 6},
        14: {"T_i": 16, "T_cur": 0, "step": 14},
        30: {"T_i": 32, "T_cur": 0, "step": 30},
    }


def test_warm_restarts_state_holds_integer_period_and_position() -> None:
    scheduler = build(CosineAnnealingWarmRestarts, [{"lr": 0.1}], T_0=3, T_mult=2)
    for _ in range(5):
        scheduler.step()
    state = scheduler.state()
    assert (state["T_i"], state["T_cur"], state["last_epoch"]) == (6, 2, 5)
    assert isinstance(state["T_cur"], int)


@pytest.mark.parametrize("restore_at", [1, 3, 9, 777])
def test_warm_restarts_restored_mid_run_continue_bit_exactly(restore_at: int) -> None:
    groups = [{"lr": 0.1, "betas": [0.9, 0.999]}, {"lr": 0.0007, "betas": [0.9, 0.999]}]
    params = {"T_0": 3, "T_mult": 2, "eta_min": 1e-5}
    expected = torch_lrs("CosineAnnealingWarmRestarts", groups, 1500, **params)
    assert (
        engine_lrs(CosineAnnealingWarmRestarts, groups, 1500, restore_at=restore_at, **params)
        == expected
    )


@pytest.mark.parametrize("steps_before", [0, 1, 4, 11])
def test_warm_restarts_get_lr_at_a_milestone_matches_torch(steps_before: int) -> None:
    """SequentialLR's ``_update_lr(0)`` on this class uses get_lr() at the current T_cur."""
    groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.004, "momentum": 0.9}]
    optimizer = make_optimizer(groups)
    scheduler = build(CosineAnnealingWarmRestarts, copy.deepcopy(groups), T_0=3, T_mult=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=3, T_mult=2)
        for _ in range(steps_before):
            oracle.step()
            scheduler.step()
        oracle._update_lr(0)
        scheduler.restart_at_zero()
        assert scheduler.lrs() == [group["lr"] for group in optimizer.param_groups]
        for _ in range(10):
            oracle.step()
            scheduler.step()
            assert scheduler.lrs() == [group["lr"] for group in optimizer.param_groups]
    assert (scheduler.T_cur, scheduler.T_i) == (oracle.T_cur, oracle.T_i)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"T_0": 0}, "T_0"),
        ({"T_0": -3}, "T_0"),
        ({"T_0": 5, "T_mult": 0}, "T_mult"),
        ({"T_0": 0, "T_mult": 0}, "T_0"),
    ],
)
def test_warm_restarts_refusals_carry_torchs_message_and_name_the_field(
    params: dict[str, Any], field: str
) -> None:
    optimizer = torch.optim.SGD([torch.zeros(1)], lr=0.1)
    with pytest.raises(ValueError) as torch_refusal:
        lr_scheduler.CosineAnnealingWarmRestarts(optimizer, **params)
    with pytest.raises(InvalidConfig) as refused:
        CosineAnnealingWarmRestarts([{"lr": 0.1}], CosineAnnealingWarmRestarts.Params(**params))
    assert refused.value.loc == ("params", field)
    assert refused.value.message == str(torch_refusal.value)


@pytest.mark.parametrize(
    "children",
    [
        [{"type": "LinearLR", "params": {"start_factor": 0.1, "total_iters": 5}},
         {"type": "CosineAnnealingLR", "params": {"T_max": 30, "eta_min": 0.001}}],
        [{"type": "ConstantLR", "params": {"factor": 0.5, "total_iters": 3}},
         {"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 4, "T_mult": 2}}],
        [{"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 3, "eta_min": 0.01}},
         {"type": "CosineAnnealingLR", "params": {"T_max": 7}}],
    ],
)  # fmt: skip
def test_cosine_schedules_as_sequential_children_match_torch(children: list[Any]) -> None:
    config = {"type": "SequentialLR", "params": {"schedulers": children, "milestones": [10]}}
    groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.9}]
    oracle = run_in_torch(config, groups, 300)
    assert oracle.error is None
    scheduler = registry.build(config, groups)
    assert [scheduler.lrs()] + [scheduler.step().lr for _ in range(300)] == oracle.lr
