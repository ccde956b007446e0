"""The step template shared by every type: what a step reports, and what stays the caller's."""

import copy
from typing import Any

import pytest

from service.schedules import build

SGD_GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.8}]
ADAM_GROUPS = [{"lr": 0.003, "betas": [0.9, 0.999]}, {"lr": 0.02, "betas": [0.8, 0.99]}]

EVERY_TYPE: dict[str, dict[str, Any]] = {
    "LambdaLR": {"type": "LambdaLR", "params": {"lr_lambda": "0.95 ** epoch"}},
    "MultiplicativeLR": {"type": "MultiplicativeLR", "params": {"lr_lambda": "0.9"}},
    "StepLR": {"type": "StepLR", "params": {"step_size": 3}},
    "MultiStepLR": {"type": "MultiStepLR", "params": {"milestones": [2, 5]}},
    "ConstantLR": {"type": "ConstantLR", "params": {"total_iters": 4}},
    "LinearLR": {"type": "LinearLR", "params": {"total_iters": 4}},
    "ExponentialLR": {"type": "ExponentialLR", "params": {"gamma": 0.9}},
    "PolynomialLR": {"type": "PolynomialLR", "params": {"total_iters": 6}},
    "CosineAnnealingLR": {"type": "CosineAnnealingLR", "params": {"T_max": 4}},
    "CosineAnnealingWarmRestarts": {
        "type": "CosineAnnealingWarmRestarts",
        "params": {"T_0": 2, "T_mult": 2},
    },
    "CyclicLR": {"type": "CyclicLR", "params": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3}},
    "OneCycleLR": {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": 12}},
    "ReduceLROnPlateau": {"type": "ReduceLROnPlateau", "params": {"patience": 0}},
    "SequentialLR": {
        "type": "SequentialLR",
        "params": {
            "schedulers": [
                {"type": "LinearLR", "params": {"total_iters": 3}},
                {"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 2}},
            ],
            "milestones": [3],
        },
    },
    "ChainedScheduler": {
        "type": "ChainedScheduler",
        "params": {
            "schedulers": [
                {"type": "CyclicLR", "params": {"base_lr": 0.01, "max_lr": 0.1}},
                {"type": "ExponentialLR", "params": {"gamma": 0.9}},
            ]
        },
    },
    "LRRangeTest": {
        "type": "LRRangeTest",
        "params": {"start_lr": 1e-4, "end_lr": 1.0, "num_steps": 12},
    },
}
# Flat, then rising: plateaus reduce, the range test stops on divergence.
LOSSES = [1.0, 1.0, 1.0, 1.0, 2.0, 5.0, 9.0, 20.0, 50.0, 90.0, 99.0, 120.0]


@pytest.mark.parametrize("groups", [SGD_GROUPS, ADAM_GROUPS], ids=["sgd", "adam"])
@pytest.mark.parametrize("type_name", EVERY_TYPE)
def test_step_reports_what_outcome_reports_right_after_it(
    type_name: str, groups: list[dict[str, Any]]
) -> None:
    scheduler = build(EVERY_TYPE[type_name], groups)
    scheduler.outcome()
    reported_events = 0
    for loss in LOSSES:
        stepped = scheduler.step({"val_loss": loss, "loss": loss})
        now = scheduler.outcome()
        assert (stepped.step, stepped.lr, stepped.momentum, stepped.stop) == (
            now.step,
            now.lr,
            now.momentum,
            now.stop,
        )
        assert now.events == []
        reported_events += len(stepped.events)
    if type_name in ("CosineAnnealingWarmRestarts", "ReduceLROnPlateau", "LRRangeTest"):
        assert reported_events > 0


@pytest.mark.parametrize("type_name", EVERY_TYPE)
def test_reported_lists_are_the_callers_to_keep(type_name: str) -> None:
    scheduler = build(EVERY_TYPE[type_name], SGD_GROUPS)
    stepped = scheduler.step({"val_loss": 1.0, "loss": 1.0})
    kept = copy.deepcopy(stepped)
    stepped.lr.append(-1.0)
    if stepped.momentum is not None:
        stepped.momentum.clear()
    stepped.events.clear()
    assert scheduler.lrs() == kept.lr
    assert scheduler.momenta() == kept.momentum
    assert scheduler.step({"val_loss": 1.0, "loss": 1.0}).step == kept.step + 1
