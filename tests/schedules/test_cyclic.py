"""CyclicLR and OneCycleLR against real torch 2.13.0: lrs and momenta float for float."""

import copy
import random
import warnings
from typing import Any

import pytest
from torch.optim import lr_scheduler

from service.schedules import registry
from service.schedules.cyclic import CyclicLR, OneCycleLR
from service.schedules.errors import InvalidConfig, InvalidStepValue, StepPastEnd
from tests.schedules.engine_harness import build, restore
from tests.schedules.torch_oracle import TorchError, TorchRun, make_optimizer, run_in_torch

pytestmark = pytest.mark.torch

Groups = list[dict[str, Any]]
SchedulerClass = type[CyclicLR] | type[OneCycleLR]

SGD_GROUPS: Groups = [
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.01, "momentum": 0.5},
    {"lr": 0.3, "momentum": 0.0},
]
ADAM_GROUPS: Groups = [
    {"lr": 0.001, "betas": [0.9, 0.999]},
    {"lr": 0.02, "betas": [0.85, 0.99]},
]
NO_MOMENTUM_GROUPS: Groups = [{"lr": 0.1}]


def random_groups(rng: random.Random) -> Groups:
    count = rng.randint(1, 4)
    if rng.random() < 0.5:
        return [{"lr": rng.uniform(1e-4, 0.5), "betas": [0.9, 0.999]} for _ in range(count)]
    return [{"lr": rng.uniform(1e-4, 0.5), "momentum": 0.9} for _ in range(count)]


def per_group_or_one(rng: random.Random, count: int, low: float, high: float) -> Any:
    if rng.random() < 0.5:
        return rng.uniform(low, high)
    return [rng.uniform(low, high) for _ in range(count)]


def engine_run(
    scheduler_class: SchedulerClass,
    groups: Groups,
    steps: int,
    lr_edits: dict[int, list[float]] | None = None,
    restore_at: int | None = None,
    **params: Any,
) -> TorchRun:
    """The engine's groups after construction and each step, shaped like the oracle's record."""
    edits = lr_edits or {}
    scheduler = build(scheduler_class, copy.deepcopy(groups), **params)
    recorded = TorchRun(lr=[scheduler.lrs()], momentum=None)
    if scheduler.cycles_momentum:
        recorded.momentum = [scheduler.momenta()]
    if 0 in edits:
        scheduler.set_lr(edits[0])
    for step in range(1, steps + 1):
        if step == restore_at:
            scheduler = restore(scheduler_class, groups, scheduler.state(), **params)
        try:
            outcome = scheduler.step()
        except (InvalidStepValue, StepPastEnd) as failure:
            recorded.error = TorchError(step, type(failure).__name__, str(failure))
            return recorded
        recorded.lr.append(outcome.lr)
        if recorded.momentum is not None:
            recorded.momentum.append(outcome.momentum)
        if step in edits:
            scheduler.set_lr(edits[step])
    return recorded


def torch_run(type_name: str, groups: Groups, steps: int, **params: Any) -> TorchRun:
    run = run_in_torch({"type": type_name, "params": params}, groups, steps)
    assert run.error is None, run.error
    return run


def assert_same_run(engine: TorchRun, oracle: TorchRun) -> None:
    """Same values after every step, and a failure (if any) at the same step."""
    assert engine.lr == oracle.lr
    assert engine.momentum == oracle.momentum
    assert (engine.error is None) == (oracle.error is None)
    if engine.error is not None and oracle.error is not None:
        assert engine.error.step == oracle.error.step


def torch_value_error(type_name: str, groups: Groups, **params: Any) -> str:
    run = run_in_torch({"type": type_name, "params": params}, groups, 0)
    assert run.error is not None and run.error.type == "ValueError", run.error
    return run.error.message


def refusal(scheduler_class: SchedulerClass, groups: Groups, **params: Any) -> InvalidConfig:
    with pytest.raises(InvalidConfig) as refused:
        scheduler_class(copy.deepcopy(groups), scheduler_class.Params(**params))
    return refused.value


# -- CyclicLR ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(15))
def test_cyclic_matches_torch_over_thousands_of_steps(seed: int) -> None:
    rng = random.Random(seed)
    groups = random_groups(rng)
    count = len(groups)
    params: dict[str, Any] = {
        "base_lr": per_group_or_one(rng, count, 1e-5, 0.01),
        "max_lr": per_group_or_one(rng, count, 0.02, 1.0),
        "step_size_up": rng.choice([1, 2, 7, 100, 333]),
        "step_size_down": rng.choice([None, 1, 13, 250]),
        "mode": ["triangular", "triangular2", "exp_range"][seed % 3],
        "gamma": rng.choice([1.0, 0.999, 0.99994]),
        "cycle_momentum": rng.random() < 0.8,
        "base_momentum": per_group_or_one(rng, count, 0.7, 0.85),
        "max_momentum": per_group_or_one(rng, count, 0.86, 0.99),
    }
    # triangular2 with short cycles overflows 2.0 ** (cycle - 1) within the run: torch
    # crashes there, the engine refuses that step.
    oracle = run_in_torch({"type": "CyclicLR", "params": params}, groups, 3000)
    assert_same_run(engine_run(CyclicLR, groups, 3000, **params), oracle)


@pytest.mark.parametrize("scale_mode", ["cycle", "iterations"])
@pytest.mark.parametrize(
    "scale_fn", ["1 / (2.0 ** (x - 1))", "0.5 * (1 + cos(x * pi / 10))", "1.0 / x if x else 1"]
)
def test_cyclic_custom_scale_fn_matches_torch(scale_fn: str, scale_mode: str) -> None:
    params = {
        "base_lr": [0.001, 0.0005],
        "max_lr": 0.05,
        "step_size_up": 6,
        "step_size_down": 9,
        "mode": "no such mode",  # ignored by torch once scale_fn is given
        "scale_fn": scale_fn,
        "scale_mode": scale_mode,
    }
    groups = ADAM_GROUPS
    oracle = run_in_torch({"type": "CyclicLR", "params": params}, groups, 1200)
    assert_same_run(engine_run(CyclicLR, groups, 1200, **params), oracle)


def test_cyclic_ignores_scale_mode_for_built_in_modes() -> None:
    params = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4, "mode": "exp_range",
              "gamma": 0.99, "scale_mode": "cycle"}  # fmt: skip
    groups = SGD_GROUPS
    assert_same_run(
        engine_run(CyclicLR, groups, 200, **params), torch_run("CyclicLR", groups, 200, **params)
    )


@pytest.mark.parametrize(("step_size_up", "step_size_down"), [(3, 0), (-2, None), (5, -1), (-1, 4)])
def test_cyclic_odd_step_sizes_torch_accepts_match_torch(
    step_size_up: int, step_size_down: int | None
) -> None:
    params = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": step_size_up,
              "step_size_down": step_size_down}  # fmt: skip
    groups = SGD_GROUPS
    assert_same_run(
        engine_run(CyclicLR, groups, 300, **params), torch_run("CyclicLR", groups, 300, **params)
    )


def test_cyclic_overwrites_lr_and_momentum_at_construction() -> None:
    scheduler = build(CyclicLR, copy.deepcopy(SGD_GROUPS), base_lr=0.004, max_lr=0.1,
                      base_momentum=0.8, max_momentum=[0.95, 0.9, 0.91])  # fmt: skip
    outcome = scheduler.outcome()
    assert outcome.lr == [0.004, 0.004, 0.004]
    assert outcome.momentum == [0.95, 0.9, 0.91]
    assert scheduler.groups[0]["max_momentum"] == 0.95
    assert scheduler.groups[0]["base_momentum"] == 0.8
    assert scheduler.groups[0]["initial_lr"] == 0.004


def test_cyclic_writes_beta1_as_a_list_and_keeps_beta2() -> None:
    scheduler = build(CyclicLR, copy.deepcopy(ADAM_GROUPS), base_lr=0.001, max_lr=0.01,
                      step_size_up=2)  # fmt: skip
    momenta = scheduler.step().momentum
    assert scheduler.groups[0]["betas"] == [momenta[0], 0.999]
    assert scheduler.groups[1]["betas"] == [momenta[1], 0.99]
    assert 0.8 < momenta[0] < 0.9


def test_cyclic_without_momentum_cycling_leaves_momentum_alone() -> None:
    params = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3, "cycle_momentum": False}
    scheduler = build(CyclicLR, copy.deepcopy(NO_MOMENTUM_GROUPS), **params)
    assert not scheduler.cycles_momentum
    assert scheduler.step().momentum is None
    engine = engine_run(CyclicLR, SGD_GROUPS, 50, **params)
    assert engine.momentum is None
    assert engine.lr == torch_run("CyclicLR", SGD_GROUPS, 50, **params).lr


def test_cyclic_construction_step_runs_on_an_existing_initial_lr_as_torch() -> None:
    """torch sets base_lrs = base_lr only after its construction step, which used initial_lr."""
    groups = [{"lr": 0.05, "initial_lr": 0.2, "momentum": 0.9}]
    params = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5}
    oracle = torch_run("CyclicLR", groups, 30, **params)
    assert oracle.lr[0] == [0.2]
    assert_same_run(engine_run(CyclicLR, groups, 30, **params), oracle)


def test_cyclic_overwrites_hand_edits_as_torch_does() -> None:
    params = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5}
    edits = {0: [0.5, 0.5, 0.5], 7: [1.0, 0.0, 0.2]}
    oracle = run_in_torch({"type": "CyclicLR", "params": params}, SGD_GROUPS, 20, lr_edits=edits)
    assert_same_run(engine_run(CyclicLR, SGD_GROUPS, 20, edits, **params), oracle)


@pytest.mark.parametrize("restore_at", [1, 9, 2500])
def test_cyclic_restored_mid_run_continues_bit_exactly(restore_at: int) -> None:
    params = {"base_lr": [0.001, 0.002], "max_lr": 0.1, "step_size_up": 7, "step_size_down": 11,
              "mode": "exp_range", "gamma": 0.9999}  # fmt: skip
    oracle = torch_run("CyclicLR", ADAM_GROUPS, 3000, **params)
    assert_same_run(
        engine_run(CyclicLR, ADAM_GROUPS, 3000, restore_at=restore_at, **params), oracle
    )


@pytest.mark.parametrize("steps_before", [0, 3, 11])
def test_cyclic_restart_at_zero_matches_torchs_update_lr_zero(steps_before: int) -> None:
    params = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4, "mode": "triangular2"}
    optimizer = make_optimizer(SGD_GROUPS)
    scheduler = build(CyclicLR, copy.deepcopy(SGD_GROUPS), **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = lr_scheduler.CyclicLR(optimizer, **params)
        for _ in range(steps_before):
            oracle.step()
            scheduler.step()
        oracle._update_lr(0)
        scheduler.restart_at_zero()
        for _ in range(12):
            assert scheduler.lrs() == [group["lr"] for group in optimizer.param_groups]
            assert scheduler.momenta() == [group["momentum"] for group in optimizer.param_groups]
            oracle.step()
            scheduler.step()


def test_cyclic_triangular2_overflow_is_refused_at_the_step_torch_crashes() -> None:
    params = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 1, "mode": "triangular2"}
    run = run_in_torch({"type": "CyclicLR", "params": params}, SGD_GROUPS, 2100)
    assert run.error is not None and run.error.type == "OverflowError"
    scheduler = build(CyclicLR, copy.deepcopy(SGD_GROUPS), **params)
    for _ in range(run.error.step - 1):
        scheduler.step()
    assert scheduler.lrs() == run.lr[-1]
    state_before = scheduler.state()
    with pytest.raises(InvalidStepValue) as failed:
        scheduler.step()
    assert failed.value.step == run.error.step
    assert scheduler.state() == state_before


@pytest.mark.parametrize(
    ("groups", "params", "loc"),
    [
        (SGD_GROUPS, {"base_lr": [0.1, 0.2], "max_lr": [0.1]}, ("params", "base_lr")),
        (SGD_GROUPS, {"base_lr": 0.1, "max_lr": [0.1]}, ("params", "max_lr")),
        (SGD_GROUPS, {"base_lr": 0.01, "max_lr": 0.1, "mode": "square"}, ("params", "mode")),
        (NO_MOMENTUM_GROUPS, {"base_lr": 0.01, "max_lr": 0.1}, ("param_groups", 0, "momentum")),
        (SGD_GROUPS, {"base_lr": 0.01, "max_lr": 0.1, "base_momentum": [0.8]},
         ("params", "base_momentum")),
        (SGD_GROUPS, {"base_lr": 0.01, "max_lr": 0.1, "base_momentum": [0.8] * 3,
                      "max_momentum": [0.9, 0.9]}, ("params", "max_momentum")),
        (ADAM_GROUPS, {"base_lr": 0.01, "max_lr": 0.1, "mode": "square",
                       "base_momentum": [0.8]}, ("params", "mode")),
    ],
)  # fmt: skip
def test_cyclic_refusals_carry_torchs_message_in_torchs_order(
    groups: Groups, params: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    refused = refusal(CyclicLR, groups, **params)
    assert refused.loc == loc
    assert refused.message == torch_value_error("CyclicLR", groups, **params)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"step_size_up": 0}, "step_size_up"),
        ({"step_size_up": 0, "step_size_down": 4}, "step_size_up"),
        ({"step_size_up": 3, "step_size_down": -3}, "step_size_down"),
        ({"step_size_up": 0, "step_size_down": 0}, "step_size_down"),
        ({"scale_fn": "1 / (x - 1)"}, "scale_fn"),
        ({"scale_fn": "1 / x", "scale_mode": "iterations"}, "scale_fn"),
    ],
)
def test_cyclic_refuses_what_torch_crashes_on_while_constructing(
    params: dict[str, Any], field: str
) -> None:
    params = {"base_lr": 0.01, "max_lr": 0.1, **params}
    run = run_in_torch({"type": "CyclicLR", "params": params}, SGD_GROUPS, 0)
    assert run.error is not None and run.error.type == "ZeroDivisionError"
    assert refusal(CyclicLR, SGD_GROUPS, **params).loc == ("params", field)


def test_cyclic_cycles_momentum_follows_the_parameter() -> None:
    assert build(CyclicLR, copy.deepcopy(SGD_GROUPS), base_lr=0.1, max_lr=1.0).cycles_momentum
    assert not build(
        CyclicLR, copy.deepcopy(SGD_GROUPS), base_lr=0.1, max_lr=1.0, cycle_momentum=False
    ).cycles_momentum


# -- OneCycleLR -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(16))
def test_one_cycle_matches_torch_up_to_and_including_total_steps(seed: int) -> None:
    rng = random.Random(1000 + seed)
    groups = random_groups(rng)
    count = len(groups)
    params: dict[str, Any] = {
        "max_lr": per_group_or_one(rng, count, 0.01, 1.0),
        "pct_start": rng.choice([0.0, 0.1, 0.25, 0.3, 0.5, 0.77, 0.95]),
        "anneal_strategy": ["cos", "linear"][seed % 2],
        "three_phase": seed % 4 >= 2,
        "cycle_momentum": rng.random() < 0.8,
        "base_momentum": per_group_or_one(rng, count, 0.7, 0.85),
        "max_momentum": per_group_or_one(rng, count, 0.86, 0.99),
        "div_factor": rng.choice([25.0, 10, 3.7]),
        "final_div_factor": rng.choice([1e4, 100, 7.5]),
    }
    if seed % 3 == 0:
        params["epochs"], params["steps_per_epoch"] = rng.randint(1, 20), rng.randint(1, 150)
        total = params["epochs"] * params["steps_per_epoch"]
    else:
        total = params["total_steps"] = rng.choice([7, 100, 1000, 2999])
    oracle = torch_run("OneCycleLR", groups, total, **params)
    assert_same_run(engine_run(OneCycleLR, groups, total, **params), oracle)


def test_one_cycle_construction_value_is_torchs_anneal_at_pct_zero() -> None:
    scheduler = build(OneCycleLR, [{"lr": 0.5, "momentum": 0.9}], max_lr=0.1, total_steps=10)
    assert scheduler.outcome().lr == [0.0040000000000000036]
    assert scheduler.outcome().momentum == [0.95]


def test_one_cycle_overwrites_an_existing_initial_lr() -> None:
    groups = [{"lr": 0.5, "initial_lr": 0.7, "momentum": 0.9}]
    params = {"max_lr": 0.1, "total_steps": 50, "anneal_strategy": "linear"}
    scheduler = build(OneCycleLR, copy.deepcopy(groups), **params)
    assert scheduler.groups[0]["initial_lr"] == 0.1 / 25.0
    assert scheduler.base_lrs == [0.1 / 25.0]
    assert_same_run(
        engine_run(OneCycleLR, groups, 50, **params), torch_run("OneCycleLR", groups, 50, **params)
    )


def test_one_cycle_linear_extrapolates_below_min_lr_at_total_steps() -> None:
    params = {"max_lr": 0.1, "total_steps": 10, "anneal_strategy": "linear"}
    scheduler = build(OneCycleLR, [{"lr": 0.1, "momentum": 0.9}], **params)
    for _ in range(10):
        outcome = scheduler.step()
    assert outcome.lr[0] < 0
    assert (
        outcome.lr == torch_run("OneCycleLR", [{"lr": 0.1, "momentum": 0.9}], 10, **params).lr[-1]
    )


@pytest.mark.parametrize("groups", [SGD_GROUPS, ADAM_GROUPS])
def test_one_cycle_step_past_total_steps_is_refused_before_anything_changes(groups: Groups) -> None:
    params = {"max_lr": 0.1, "total_steps": 20}
    run = run_in_torch({"type": "OneCycleLR", "params": params}, groups, 25)
    assert run.error is not None and run.error.step == 21
    scheduler = build(OneCycleLR, copy.deepcopy(groups), **params)
    for _ in range(20):
        scheduler.step()
    state_before = scheduler.state()
    with pytest.raises(StepPastEnd) as refused:
        scheduler.step()
    assert (refused.value.step, refused.value.total_steps) == (21, 20)
    assert str(refused.value) == run.error.message
    assert scheduler.state() == state_before
    assert scheduler.lrs() == run.lr[-1]
    with pytest.raises(StepPastEnd):
        scheduler.step()
    assert scheduler.last_epoch == 20


@pytest.mark.parametrize("restore_at", [1, 300, 999])
def test_one_cycle_restored_mid_run_continues_bit_exactly(restore_at: int) -> None:
    params = {"max_lr": [0.1, 0.05], "total_steps": 1000, "three_phase": True}
    oracle = torch_run("OneCycleLR", ADAM_GROUPS, 1000, **params)
    assert_same_run(
        engine_run(OneCycleLR, ADAM_GROUPS, 1000, restore_at=restore_at, **params), oracle
    )


def test_one_cycle_overwrites_hand_edits_as_torch_does() -> None:
    params = {"max_lr": 0.1, "total_steps": 30}
    edits = {0: [0.5, 0.5, 0.5], 10: [1.0, 0.0, 0.2]}
    oracle = run_in_torch({"type": "OneCycleLR", "params": params}, SGD_GROUPS, 30, lr_edits=edits)
    assert_same_run(engine_run(OneCycleLR, SGD_GROUPS, 30, edits, **params), oracle)


@pytest.mark.parametrize("steps_before", [0, 4, 17])
def test_one_cycle_restart_at_zero_matches_torchs_update_lr_zero(steps_before: int) -> None:
    params = {"max_lr": 0.1, "total_steps": 40}
    optimizer = make_optimizer(ADAM_GROUPS)
    scheduler = build(OneCycleLR, copy.deepcopy(ADAM_GROUPS), **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = lr_scheduler.OneCycleLR(optimizer, **params)
        for _ in range(steps_before):
            oracle.step()
            scheduler.step()
        oracle._update_lr(0)
        scheduler.restart_at_zero()
        for _ in range(12):
            assert scheduler.lrs() == [group["lr"] for group in optimizer.param_groups]
            assert scheduler.momenta() == [group["betas"][0] for group in optimizer.param_groups]
            oracle.step()
            scheduler.step()


@pytest.mark.parametrize(
    ("groups", "params", "loc"),
    [
        (SGD_GROUPS, {"max_lr": 0.1, "total_steps": 0}, ("params", "total_steps")),
        (SGD_GROUPS, {"max_lr": 0.1, "total_steps": -4, "epochs": 2, "steps_per_epoch": 3},
         ("params", "total_steps")),
        (SGD_GROUPS, {"max_lr": 0.1, "epochs": 0, "steps_per_epoch": 3}, ("params", "epochs")),
        (SGD_GROUPS, {"max_lr": 0.1, "epochs": 3, "steps_per_epoch": -1},
         ("params", "steps_per_epoch")),
        (SGD_GROUPS, {"max_lr": 0.1}, ("params", "total_steps")),
        (SGD_GROUPS, {"max_lr": 0.1, "epochs": 3}, ("params", "steps_per_epoch")),
        (SGD_GROUPS, {"max_lr": 0.1, "steps_per_epoch": 3}, ("params", "epochs")),
        (SGD_GROUPS, {"max_lr": 0.1, "total_steps": 10, "pct_start": 0}, ("params", "pct_start")),
        (SGD_GROUPS, {"max_lr": 0.1, "total_steps": 10, "pct_start": 1}, ("params", "pct_start")),
        (SGD_GROUPS, {"max_lr": 0.1, "total_steps": 10, "pct_start": 1.5},
         ("params", "pct_start")),
        (SGD_GROUPS, {"max_lr": 0.1, "total_steps": 10, "pct_start": 3,
                      "anneal_strategy": "cosine"}, ("params", "pct_start")),
        (SGD_GROUPS, {"max_lr": 0.1, "total_steps": 10, "anneal_strategy": "cosine"},
         ("params", "anneal_strategy")),
        (SGD_GROUPS, {"max_lr": [0.1], "total_steps": 10}, ("params", "max_lr")),
        (NO_MOMENTUM_GROUPS, {"max_lr": 0.1, "total_steps": 10}, ("param_groups", 0, "momentum")),
        (SGD_GROUPS, {"max_lr": 0.1, "total_steps": 10, "base_momentum": [0.8],
                      "max_momentum": [0.9]}, ("params", "max_momentum")),
        (ADAM_GROUPS, {"max_lr": 0.1, "total_steps": 10, "base_momentum": [0.8]},
         ("params", "base_momentum")),
    ],
)  # fmt: skip
def test_one_cycle_refusals_carry_torchs_message_in_torchs_order(
    groups: Groups, params: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    refused = refusal(OneCycleLR, groups, **params)
    assert refused.loc == loc
    assert refused.message == torch_value_error("OneCycleLR", groups, **params)


@pytest.mark.parametrize(
    ("params", "field", "crash_step"),
    [
        ({"total_steps": 10, "pct_start": 0.1}, "pct_start", 0),
        ({"total_steps": 4, "pct_start": 0.25, "three_phase": True}, "pct_start", 0),
        ({"total_steps": 10, "div_factor": 0.0}, "div_factor", 0),
        ({"total_steps": 10, "final_div_factor": 0}, "final_div_factor", 0),
    ],
)
def test_one_cycle_refuses_zero_divisions_torch_would_hit(
    params: dict[str, Any], field: str, crash_step: int
) -> None:
    params = {"max_lr": 0.1, **params}
    run = run_in_torch({"type": "OneCycleLR", "params": params}, SGD_GROUPS, params["total_steps"])
    assert run.error is not None
    assert (run.error.type, run.error.step) == ("ZeroDivisionError", crash_step)
    assert refusal(OneCycleLR, SGD_GROUPS, **params).loc == ("params", field)


@pytest.mark.parametrize(
    "params",
    [
        {"total_steps": 10, "pct_start": 1.0},
        {"total_steps": 3, "pct_start": 2 / 3, "three_phase": True},
    ],
)
def test_one_cycle_with_a_zero_length_last_phase_runs_as_torch_then_ends(
    params: dict[str, Any],
) -> None:
    """torch accepts these, runs total_steps - 1 steps, and divides by zero at total_steps:
    the engine runs the same steps and ends the schedule there (StepPastEnd, a 409)."""
    params = {"max_lr": 0.1, **params}
    total_steps = params["total_steps"]
    run = run_in_torch({"type": "OneCycleLR", "params": params}, SGD_GROUPS, total_steps)
    assert run.error is not None
    assert (run.error.type, run.error.step) == ("ZeroDivisionError", total_steps)
    scheduler = build(OneCycleLR, copy.deepcopy(SGD_GROUPS), **params)
    for expected in run.lr[1:]:
        assert scheduler.step().lr == expected
    state_before = scheduler.state()
    with pytest.raises(StepPastEnd) as ended:
        scheduler.step()
    assert ended.value.step == total_steps
    assert scheduler.state() == state_before


def test_one_cycle_pct_start_one_three_phase_runs_as_torch() -> None:
    """The second phase absorbs the end when 2·pct·T − 2 lies beyond T − 1: no division by zero."""
    params = {"max_lr": 0.1, "total_steps": 10, "pct_start": 1.0, "three_phase": True}
    assert_same_run(
        engine_run(OneCycleLR, SGD_GROUPS, 10, **params),
        torch_run("OneCycleLR", SGD_GROUPS, 10, **params),
    )


@pytest.mark.parametrize(
    "config",
    [
        {"type": "SequentialLR", "params": {"milestones": [6], "schedulers": [
            {"type": "LinearLR", "params": {"start_factor": 0.2, "total_iters": 6}},
            {"type": "OneCycleLR", "params": {"max_lr": 0.3, "total_steps": 60}}]}},
        {"type": "SequentialLR", "params": {"milestones": [9], "schedulers": [
            {"type": "OneCycleLR", "params": {"max_lr": 0.3, "total_steps": 9,
                                              "anneal_strategy": "linear"}},
            {"type": "CyclicLR", "params": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4,
                                            "mode": "triangular2"}}]}},
        {"type": "ChainedScheduler", "params": {"schedulers": [
            {"type": "ExponentialLR", "params": {"gamma": 0.9}},
            {"type": "CyclicLR", "params": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5}}]}},
    ],
)  # fmt: skip
def test_cyclic_schedules_inside_composites_match_torch(config: dict[str, Any]) -> None:
    groups = ADAM_GROUPS
    oracle = run_in_torch(config, groups, 60)
    assert oracle.error is None
    scheduler = registry.build(config, groups)
    engine = TorchRun(lr=[scheduler.lrs()], momentum=[scheduler.momenta()])
    for _ in range(60):
        outcome = scheduler.step()
        engine.lr.append(outcome.lr)
        assert engine.momentum is not None
        engine.momentum.append(outcome.momentum)
    assert_same_run(engine, oracle)
