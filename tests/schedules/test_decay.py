"""The decay schedulers (LambdaLR … PolynomialLR) against real torch 2.13.0, float for float.

Every case runs a few hundred steps in torch and in the engine with hand edits of
the lr between steps and a restore from JSON-dumped state mid-run; values are
compared by ``repr``, so a float that differs in the last bit, an int where torch
holds a float, or ``-0.0`` for ``0.0`` all fail.
"""

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from service.schedules import InvalidConfig, InvalidStepValue, build, restore
from tests.schedules.torch_oracle import run_in_torch

pytestmark = pytest.mark.torch

SGD_GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.013, "momentum": 0.0}]
ADAM_GROUPS = [{"lr": 0.003, "betas": [0.9, 0.999]}]
STEPS = 300
# Hand edits right after these steps (0 = after construction), as POST /lr does.
EDITS_SGD = {0: [0.2, 0.02], 41: [0.07, 0.002], 150: [0.5, 0.0]}
EDITS_ADAM = {0: [0.004], 41: [0.0007], 150: [0.01]}
RESTORE_AT = (1, 57, 151, 233)


def engine_run(
    config: Mapping[str, Any],
    param_groups: Sequence[Mapping[str, Any]],
    steps: int,
    *,
    metrics: Sequence[Mapping[str, float] | None] | None = None,
    lr_edits: Mapping[int, Sequence[float]] | None = None,
    restore_at: Sequence[int] = (),
) -> tuple[list[list[float]], list[list[float]] | None]:
    """The engine's groups after construction and each step, restored from JSON at restore_at."""
    edits = lr_edits or {}
    original_groups = copy.deepcopy(list(param_groups))
    scheduler = build(copy.deepcopy(dict(config)), copy.deepcopy(original_groups))
    outcome = scheduler.outcome()
    lrs, momenta = [outcome.lr], None if outcome.momentum is None else [outcome.momentum]
    for step in range(steps + 1):
        if step > 0:
            if step in restore_at:
                saved = json.loads(json.dumps(scheduler.state(), allow_nan=False))
                scheduler = restore(dict(config), copy.deepcopy(original_groups), saved)
            outcome = scheduler.step(None if metrics is None else metrics[step - 1])
            assert outcome.step == step
            lrs.append(outcome.lr)
            if momenta is not None:
                assert outcome.momentum is not None
                momenta.append(outcome.momentum)
        if step in edits:
            scheduler.set_lr(edits[step])
    return lrs, momenta


def as_reprs(rows: Sequence[Sequence[float]] | None) -> list[list[str]] | None:
    return None if rows is None else [[repr(value) for value in row] for row in rows]


def assert_matches_torch(
    config: Mapping[str, Any],
    param_groups: Sequence[Mapping[str, Any]],
    steps: int = STEPS,
    lr_edits: Mapping[int, Sequence[float]] | None = None,
) -> None:
    torch_run = run_in_torch(config, param_groups, steps, lr_edits=lr_edits)
    assert torch_run.error is None, torch_run.error
    lrs, momenta = engine_run(config, param_groups, steps, lr_edits=lr_edits, restore_at=RESTORE_AT)
    assert as_reprs(lrs) == as_reprs(torch_run.lr)
    assert as_reprs(momenta) == as_reprs(torch_run.momentum)


DECAY_CASES = [
    {"type": "LambdaLR", "params": {"lr_lambda": "0.95 ** epoch"}},
    {"type": "LambdaLR", "params": {"lr_lambda": "min(1.0, (epoch + 1) / 10)"}},
    {"type": "LambdaLR", "params": {"lr_lambda": "epoch // 30"}},
    {"type": "LambdaLR", "params": {"lr_lambda": ["epoch // 30", "0.95 ** epoch"]}},
    {"type": "MultiplicativeLR", "params": {"lr_lambda": "0.95"}},
    {"type": "MultiplicativeLR", "params": {"lr_lambda": ["0.99", "1 - epoch / 1000"]}},
    {"type": "StepLR", "params": {"step_size": 30}},
    {"type": "StepLR", "params": {"step_size": 7, "gamma": 1.5}},
    {"type": "StepLR", "params": {"step_size": -3, "gamma": 0.9}},
    {"type": "MultiStepLR", "params": {"milestones": [30, 80]}},
    {"type": "MultiStepLR", "params": {"milestones": [200, 5, 0, 5, -4, 3], "gamma": 0.7}},
    {"type": "ConstantLR", "params": {}},
    {"type": "ConstantLR", "params": {"factor": 0.37, "total_iters": 40}},
    {"type": "ConstantLR", "params": {"factor": 0.5, "total_iters": 0}},
    {"type": "ConstantLR", "params": {"factor": 0, "total_iters": -2}},
    {"type": "LinearLR", "params": {}},
    {"type": "LinearLR", "params": {"start_factor": 0.05, "total_iters": 40}},
    {"type": "LinearLR", "params": {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 100}},
    {"type": "LinearLR", "params": {"start_factor": 0.3, "end_factor": 0.7, "total_iters": 0}},
    {"type": "ExponentialLR", "params": {"gamma": 0.9}},
    {"type": "ExponentialLR", "params": {"gamma": 1.01}},
    {"type": "ExponentialLR", "params": {"gamma": 1}},
    {"type": "PolynomialLR", "params": {}},
    {"type": "PolynomialLR", "params": {"total_iters": 100, "power": 2.0}},
    {"type": "PolynomialLR", "params": {"total_iters": 250, "power": 0.5}},
    {"type": "PolynomialLR", "params": {"total_iters": 10, "power": 0}},
    {"type": "PolynomialLR", "params": {"total_iters": 0, "power": -1.0}},
    {"type": "PolynomialLR", "params": {"total_iters": -3, "power": -1.0}},
]


def _case_id(config: Mapping[str, Any]) -> str:
    return f"{config['type']}-{json.dumps(config['params'], sort_keys=True)}"


@pytest.mark.parametrize("config", DECAY_CASES, ids=_case_id)
def test_sgd_groups_follow_torch_through_edits_and_restores(config: dict[str, Any]) -> None:
    assert_matches_torch(config, SGD_GROUPS, lr_edits=EDITS_SGD)


@pytest.mark.parametrize(
    "config",
    [case for case in DECAY_CASES if not isinstance(case["params"].get("lr_lambda"), list)],
    ids=_case_id,
)
def test_adam_group_follows_torch_through_edits_and_restores(config: dict[str, Any]) -> None:
    assert_matches_torch(config, ADAM_GROUPS, lr_edits=EDITS_ADAM)


@pytest.mark.parametrize("config", DECAY_CASES, ids=_case_id)
def test_undisturbed_run_follows_torch(config: dict[str, Any]) -> None:
    assert_matches_torch(config, SGD_GROUPS)


def test_integer_lambda_keeps_torch_integer_lrs() -> None:
    """torch keeps ``int_lr * (epoch // 30)`` an int; the engine must not turn it into a float."""
    config = {"type": "LambdaLR", "params": {"lr_lambda": "epoch // 30"}}
    groups = [{"lr": 2, "momentum": 0.0}]
    assert_matches_torch(config, groups, steps=100)
    lrs, _ = engine_run(config, groups, 100)
    assert type(lrs[0][0]) is int and type(lrs[100][0]) is int


def test_initial_lr_already_in_the_groups_is_the_base() -> None:
    """torch's ``setdefault``: a group that already carries initial_lr keeps it as its base."""
    groups = [{"lr": 0.05, "initial_lr": 0.2, "momentum": 0.0}]
    assert_matches_torch({"type": "LambdaLR", "params": {"lr_lambda": "0.9 ** epoch"}}, groups)
    assert_matches_torch({"type": "StepLR", "params": {"step_size": 3}}, groups, steps=20)


def test_constant_lr_restores_by_reciprocal_not_to_base() -> None:
    lrs, _ = engine_run({"type": "ConstantLR", "params": {"factor": 0.9}}, [{"lr": 0.7}], 6)
    assert lrs[5] == [0.7000000000000001]


def test_lambda_failing_after_construction_names_the_step() -> None:
    scheduler = build(
        {"type": "LambdaLR", "params": {"lr_lambda": "1 / (epoch - 3)"}}, [{"lr": 0.1}]
    )
    for _ in range(2):
        scheduler.step()
    with pytest.raises(InvalidStepValue) as caught:
        scheduler.step()
    assert caught.value.step == 3


def test_multiplicative_lambda_is_not_called_at_construction() -> None:
    """torch skips λ(0) in its construction step, so a λ undefined at 0 is a valid config."""
    config = {"type": "MultiplicativeLR", "params": {"lr_lambda": "1 - 1 / epoch + 0.5"}}
    assert_matches_torch(config, SGD_GROUPS, steps=50)


def test_lambda_failing_at_epoch_zero_is_refused_naming_the_list_entry() -> None:
    config = {"type": "LambdaLR", "params": {"lr_lambda": ["1.0", "1 / epoch"]}}
    with pytest.raises(InvalidConfig) as caught:
        build(config, SGD_GROUPS)
    assert caught.value.loc == ("scheduler", "params", "lr_lambda", 1)


@pytest.mark.parametrize(
    ("config", "loc"),
    [
        ({"type": "StepLR", "params": {"step_size": 0}}, ("params", "step_size")),
        ({"type": "ConstantLR", "params": {"factor": 0}}, ("params", "factor")),
        ({"type": "ConstantLR", "params": {"factor": 0.0, "total_iters": 1}}, ("params", "factor")),
        ({"type": "ConstantLR", "params": {"factor": 1.5}}, ("params", "factor")),
        ({"type": "ConstantLR", "params": {"factor": -0.1}}, ("params", "factor")),
        ({"type": "LinearLR", "params": {"start_factor": 0}}, ("params", "start_factor")),
        ({"type": "LinearLR", "params": {"start_factor": 1.01}}, ("params", "start_factor")),
        ({"type": "LinearLR", "params": {"end_factor": -0.5}}, ("params", "end_factor")),
        ({"type": "LinearLR", "params": {"end_factor": 2}}, ("params", "end_factor")),
        ({"type": "PolynomialLR", "params": {"power": -0.5}}, ("params", "power")),
        ({"type": "LambdaLR", "params": {"lr_lambda": ["1.0"]}}, ("params", "lr_lambda")),
        ({"type": "MultiplicativeLR", "params": {"lr_lambda": []}}, ("params", "lr_lambda")),
        ({"type": "LambdaLR", "params": {"lr_lambda": "1 / epoch"}}, ("params", "lr_lambda")),
        ({"type": "LambdaLR", "params": {"lr_lambda": "epoch +"}}, ("params", "lr_lambda")),
        (
            {"type": "MultiplicativeLR", "params": {"lr_lambda": ["0.9", "__import__('os')"]}},
            ("params", "lr_lambda", 1),
        ),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else ".".join(map(str, value)),
)
def test_refused_configs_name_the_field(config: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidConfig) as caught:
        build(config, SGD_GROUPS)
    assert caught.value.loc == ("scheduler", *loc)


@pytest.mark.parametrize(
    "config",
    [
        {"type": "StepLR", "params": {"step_size": 0}},
        {"type": "ConstantLR", "params": {"factor": 0}},
        {"type": "PolynomialLR", "params": {"power": -0.5}},
    ],
    ids=_case_id,
)
def test_refused_configs_are_those_torch_crashes_on_later(config: dict[str, Any]) -> None:
    """The refusals beyond torch's constructor are not strictness: torch fails at some step."""
    torch_run = run_in_torch(config, SGD_GROUPS, 20)
    assert torch_run.error is not None
    assert torch_run.error.step > 0
    assert torch_run.error.type == "ZeroDivisionError"


def test_failed_step_leaves_the_scheduler_as_it_was() -> None:
    scheduler = build(
        {"type": "LambdaLR", "params": {"lr_lambda": "1 / (epoch - 2)"}}, [{"lr": 0.1}]
    )
    scheduler.step()
    before = scheduler.state()
    with pytest.raises(InvalidStepValue):
        scheduler.step()
    assert scheduler.state() == before
