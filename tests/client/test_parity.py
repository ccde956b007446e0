"""RemoteLRScheduler in a real training loop holds exactly what torch's own scheduler holds.

For every scheduler type: two identical models and optimizers, one driven by
``torch.optim.lr_scheduler``, one by ``RemoteLRScheduler`` against the live
server. After construction and after every step the param groups' lr, momentum
and betas, ``get_last_lr()`` and ``last_epoch`` are compared with ``==`` (float
for float), and at the end the trained weights are equal too.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

from client import LRKeeper, RemoteLRScheduler, ScheduleEnded
from tests.client.training import (
    OptimizerKind,
    batches,
    group_values,
    train_step,
    twin_setups,
)

pytestmark = pytest.mark.torch

TorchFactory = Callable[[torch.optim.Optimizer], Any]
PLATEAU_LOSSES = [
    1.0, 0.9, 0.95, 0.92, 0.91, math.nan, 0.93, 0.8, 0.85, 0.82,
    0.81, 0.83, 0.84, math.inf, 0.7, 0.71, 0.72, 0.73, 0.69, 0.74,
]  # fmt: skip
PLATEAU_ACCURACIES = [0.5, 0.6, 0.6, 0.59, 0.61, 0.61, 0.6, 0.7, 0.69, 0.7, 0.7, 0.71]


@dataclass(frozen=True)
class Case:
    """One schedule: its lrkeeper config and the torch scheduler it must equal."""

    config: dict[str, Any]
    make_torch: TorchFactory
    optimizer: OptimizerKind = "sgd"
    steps: int = 24
    # A bare number per step (sent under the run's monitor), or a mapping per step.
    metrics: Sequence[float | dict[str, float]] | None = None
    # What the torch scheduler is stepped with, when it differs from ``metrics``.
    torch_metrics: Sequence[float] | None = None


def _cfg(type_name: str, **params: Any) -> dict[str, Any]:
    return {"type": type_name, "params": params}


def _hf(name: str, **kwargs: Any) -> TorchFactory:
    """transformers' ``get_scheduler(name, ...)``: counts by name, the rest as its kwargs."""

    def make(optimizer: torch.optim.Optimizer) -> Any:
        transformers = pytest.importorskip("transformers")
        counts = {key: value for key, value in kwargs.items() if key in HF_COUNTS}
        specific = {key: value for key, value in kwargs.items() if key not in HF_COUNTS}
        return transformers.get_scheduler(
            name, optimizer, scheduler_specific_kwargs=specific, **counts
        )

    return make


def _hf_case(name: str, optimizer: OptimizerKind = "sgd", **params: Any) -> Case:
    return Case(_cfg(f"hf:{name}", **params), _hf(name, **params), optimizer=optimizer)


HF_COUNTS = ("num_warmup_steps", "num_training_steps")


CASES: dict[str, Case] = {
    "LambdaLR": Case(
        _cfg("LambdaLR", lr_lambda=["0.95 ** epoch", "1.0 / (epoch + 1)"]),
        lambda opt: lr_scheduler.LambdaLR(
            opt, lr_lambda=[lambda epoch: 0.95**epoch, lambda epoch: 1.0 / (epoch + 1)]
        ),
    ),
    "MultiplicativeLR": Case(
        _cfg("MultiplicativeLR", lr_lambda="0.9 if epoch % 3 == 0 else 0.99"),
        lambda opt: lr_scheduler.MultiplicativeLR(
            opt, lr_lambda=lambda epoch: 0.9 if epoch % 3 == 0 else 0.99
        ),
    ),
    "StepLR": Case(
        _cfg("StepLR", step_size=4, gamma=0.5),
        lambda opt: lr_scheduler.StepLR(opt, step_size=4, gamma=0.5),
    ),
    "MultiStepLR": Case(
        _cfg("MultiStepLR", milestones=[3, 7, 7, 12], gamma=0.3),
        lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[3, 7, 7, 12], gamma=0.3),
    ),
    "ConstantLR": Case(
        _cfg("ConstantLR", factor=0.3, total_iters=6),
        lambda opt: lr_scheduler.ConstantLR(opt, factor=0.3, total_iters=6),
    ),
    "LinearLR": Case(
        _cfg("LinearLR", start_factor=0.2, end_factor=0.9, total_iters=10),
        lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.2, end_factor=0.9, total_iters=10),
    ),
    "ExponentialLR": Case(
        _cfg("ExponentialLR", gamma=0.87),
        lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.87),
    ),
    "PolynomialLR": Case(
        _cfg("PolynomialLR", total_iters=15, power=2.0),
        lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=15, power=2.0),
    ),
    "CosineAnnealingLR": Case(
        _cfg("CosineAnnealingLR", T_max=8, eta_min=0.001),
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=8, eta_min=0.001),
    ),
    "CosineAnnealingWarmRestarts": Case(
        _cfg("CosineAnnealingWarmRestarts", T_0=3, T_mult=2, eta_min=0.0005),
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2, eta_min=0.0005),
    ),
    "CyclicLR-sgd-momentum": Case(
        _cfg(
            "CyclicLR",
            base_lr=[0.01, 0.005],
            max_lr=[0.1, 0.05],
            step_size_up=4,
            step_size_down=3,
            mode="triangular2",
        ),
        lambda opt: lr_scheduler.CyclicLR(
            opt,
            base_lr=[0.01, 0.005],
            max_lr=[0.1, 0.05],
            step_size_up=4,
            step_size_down=3,
            mode="triangular2",
        ),
    ),
    "CyclicLR-adam-betas": Case(
        _cfg(
            "CyclicLR",
            base_lr=0.001,
            max_lr=0.006,
            step_size_up=5,
            mode="exp_range",
            gamma=0.97,
            base_momentum=0.8,
            max_momentum=0.95,
        ),
        lambda opt: lr_scheduler.CyclicLR(
            opt,
            base_lr=0.001,
            max_lr=0.006,
            step_size_up=5,
            mode="exp_range",
            gamma=0.97,
            base_momentum=0.8,
            max_momentum=0.95,
        ),
        optimizer="adam",
    ),
    "OneCycleLR-sgd-momentum": Case(
        _cfg("OneCycleLR", max_lr=[0.1, 0.05], total_steps=24, pct_start=0.3),
        lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=[0.1, 0.05], total_steps=24, pct_start=0.3),
    ),
    "OneCycleLR-adam-betas": Case(
        _cfg(
            "OneCycleLR",
            max_lr=0.01,
            total_steps=20,
            three_phase=True,
            anneal_strategy="linear",
        ),
        lambda opt: lr_scheduler.OneCycleLR(
            opt, max_lr=0.01, total_steps=20, three_phase=True, anneal_strategy="linear"
        ),
        optimizer="adam",
        steps=20,
    ),
    "ReduceLROnPlateau-bare-metric": Case(
        {
            "type": "ReduceLROnPlateau",
            "params": {
                "factor": 0.5,
                "patience": 2,
                "cooldown": 1,
                "threshold": 0.01,
                "min_lr": [0.001, 0.0005],
            },
        },
        lambda opt: lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=2, cooldown=1, threshold=0.01, min_lr=[0.001, 0.0005]
        ),
        steps=len(PLATEAU_LOSSES),
        metrics=PLATEAU_LOSSES,
    ),
    "ReduceLROnPlateau-named-metrics": Case(
        {
            "type": "ReduceLROnPlateau",
            "params": {"mode": "max", "factor": 0.5, "patience": 1},
            "monitor": "acc",
        },
        lambda opt: lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=1),
        optimizer="adam",
        steps=len(PLATEAU_ACCURACIES),
        metrics=[{"val_loss": 1.0 - accuracy, "acc": accuracy} for accuracy in PLATEAU_ACCURACIES],
        torch_metrics=PLATEAU_ACCURACIES,
    ),
    "SequentialLR": Case(
        _cfg(
            "SequentialLR",
            schedulers=[
                _cfg("LinearLR", start_factor=0.1, total_iters=5),
                _cfg("CosineAnnealingLR", T_max=15),
            ],
            milestones=[5],
        ),
        lambda opt: lr_scheduler.SequentialLR(
            opt,
            schedulers=[
                lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5),
                lr_scheduler.CosineAnnealingLR(opt, T_max=15),
            ],
            milestones=[5],
        ),
    ),
    "ChainedScheduler": Case(
        _cfg(
            "ChainedScheduler",
            schedulers=[
                _cfg("ConstantLR", factor=0.5, total_iters=4),
                _cfg("ExponentialLR", gamma=0.9),
            ],
        ),
        lambda opt: lr_scheduler.ChainedScheduler(
            [
                lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=4),
                lr_scheduler.ExponentialLR(opt, gamma=0.9),
            ]
        ),
    ),
    # Hugging Face's schedules, as transformers.get_scheduler builds them. The twin
    # optimizers' first group holds the default lr, so hf:polynomial's lr_init is moot
    # here; test_hf_schedules_read_the_optimizers_default_lr makes it matter.
    "hf:linear": _hf_case("linear", num_warmup_steps=4, num_training_steps=20),
    "hf:cosine": _hf_case("cosine", "adam", num_warmup_steps=3, num_training_steps=22),
    "hf:cosine_with_restarts": _hf_case(
        "cosine_with_restarts", num_warmup_steps=2, num_training_steps=20, num_cycles=3
    ),
    "hf:polynomial": _hf_case(
        "polynomial", num_warmup_steps=5, num_training_steps=18, lr_end=1e-4, power=2.0
    ),
    "hf:constant_with_warmup": _hf_case("constant_with_warmup", num_warmup_steps=6),
    "hf:inverse_sqrt": _hf_case("inverse_sqrt", "adam", num_warmup_steps=5),
    "hf:cosine_with_min_lr": _hf_case(
        "cosine_with_min_lr", num_warmup_steps=3, num_training_steps=20, min_lr=0.004
    ),
    "hf:cosine_warmup_with_min_lr": _hf_case(
        "cosine_warmup_with_min_lr",
        num_warmup_steps=4,
        num_training_steps=20,
        min_lr_rate=0.05,
        warmup_lr_rate=0.1,
    ),
    "hf:warmup_stable_decay": _hf_case(
        "warmup_stable_decay",
        num_warmup_steps=4,
        num_decay_steps=8,
        num_training_steps=20,
        decay_type="1-sqrt",
        min_lr_ratio=0.1,
    ),
    "hf:reduce_lr_on_plateau": Case(
        _cfg("hf:reduce_lr_on_plateau", factor=0.5, patience=2, cooldown=1),
        _hf("reduce_lr_on_plateau", factor=0.5, patience=2, cooldown=1),
        steps=len(PLATEAU_LOSSES),
        metrics=PLATEAU_LOSSES,
    ),
}


@pytest.mark.parametrize("case_name", list(CASES))
def test_training_loop_holds_torch_schedulers_values_at_every_step(
    case_name: str, keeper: LRKeeper, run_id: str
) -> None:
    case = CASES[case_name]
    local_model, local_optimizer, remote_model, remote_optimizer = twin_setups(case.optimizer)
    local = case.make_torch(local_optimizer)
    remote = RemoteLRScheduler(remote_optimizer, run_id, case.config, client=keeper)

    assert group_values(remote_optimizer) == group_values(local_optimizer)
    assert remote.get_last_lr() == local.get_last_lr()
    # torch's ChainedScheduler keeps no last_epoch of its own; the run still counts steps.
    assert remote.last_epoch == getattr(local, "last_epoch", 0) == 0

    seen_lrs = {tuple(remote.get_last_lr())}
    for step, batch in enumerate(batches(case.steps), start=1):
        train_step(local_model, local_optimizer, batch)
        train_step(remote_model, remote_optimizer, batch)
        if case.metrics is None:
            local.step()
            answer = remote.step()
        else:
            torch_metric = (case.torch_metrics or case.metrics)[step - 1]
            local.step(torch_metric)
            answer = remote.step(case.metrics[step - 1])

        assert not answer.replayed
        assert group_values(remote_optimizer) == group_values(local_optimizer), f"step {step}"
        assert remote.get_last_lr() == local.get_last_lr(), f"step {step}"
        assert remote.last_epoch == getattr(local, "last_epoch", step) == step
        seen_lrs.add(tuple(remote.get_last_lr()))

    assert len(seen_lrs) > 1, "the schedule never changed the lr: the comparison proved nothing"
    assert torch.equal(remote_model.weight, local_model.weight)
    assert torch.equal(remote_model.bias, local_model.bias)


@pytest.mark.parametrize(
    "config",
    [
        _cfg("hf:polynomial", num_warmup_steps=3, num_training_steps=15, lr_end=0.001),
        _cfg("hf:cosine_with_min_lr", num_warmup_steps=2, num_training_steps=15, min_lr=0.01),
        _cfg(
            "SequentialLR",
            schedulers=[
                _cfg("ConstantLR", factor=0.5, total_iters=3),
                _cfg("hf:cosine_warmup_with_min_lr", num_warmup_steps=2, num_training_steps=12,
                     min_lr=0.01),
            ],
            milestones=[3],
        ),
    ],
    ids=["hf:polynomial", "hf:cosine_with_min_lr", "in-SequentialLR"],
)  # fmt: skip
def test_hf_schedules_read_the_optimizers_default_lr(
    config: dict[str, Any], keeper: LRKeeper, run_id: str
) -> None:
    """Groups at 0.05 and 0.3 under a default lr of 0.2: transformers divides by 0.2, and
    the client sends it as ``lr_init`` (the service alone would take the first group's)."""

    def optimizer() -> torch.optim.Optimizer:
        groups = [
            {"params": [torch.zeros(2, requires_grad=True)], "lr": 0.05},
            {"params": [torch.zeros(2, requires_grad=True)], "lr": 0.3},
        ]
        return torch.optim.SGD(groups, lr=0.2)

    local_optimizer, remote_optimizer = optimizer(), optimizer()
    local = _torch_of(config, local_optimizer)
    remote = RemoteLRScheduler(remote_optimizer, run_id, config, client=keeper, pipelined=False)
    assert "lr_init" not in str(config)
    assert remote.get_last_lr() == local.get_last_lr()
    for step in range(1, 16):
        local.step()
        remote.step()
        assert remote.get_last_lr() == local.get_last_lr(), f"step {step}"
    assert "'lr_init': 0.2" in str(keeper.get_run(run_id).scheduler)


def _torch_of(config: dict[str, Any], optimizer: torch.optim.Optimizer) -> Any:
    """The torch / transformers scheduler for a config of this module's vocabulary."""
    params = dict(config["params"])
    if config["type"] == "SequentialLR":
        children = [_torch_of(child, optimizer) for child in params["schedulers"]]
        return lr_scheduler.SequentialLR(optimizer, children, milestones=params["milestones"])
    if config["type"].startswith("hf:"):
        return _hf(config["type"].removeprefix("hf:"), **params)(optimizer)
    return getattr(lr_scheduler, config["type"])(optimizer, **params)


def test_history_records_every_step_with_its_metrics(keeper: LRKeeper, run_id: str) -> None:
    case = CASES["ReduceLROnPlateau-bare-metric"]
    *_, optimizer = twin_setups("sgd")
    remote = RemoteLRScheduler(optimizer, run_id, case.config, client=keeper)
    lrs_after_step = [remote.get_last_lr()]
    for metric in PLATEAU_LOSSES:
        remote.step(metric)
        lrs_after_step.append(remote.get_last_lr())

    history = list(keeper.history(run_id, page_size=7))
    assert [item.step for item in history] == list(range(len(PLATEAU_LOSSES) + 1))
    assert [item.lr for item in history] == lrs_after_step
    recorded = [item.metrics["val_loss"] for item in history[1:]]
    # NaN != NaN, so compare the spelling the codec gives them.
    assert [repr(value) for value in recorded] == [repr(value) for value in PLATEAU_LOSSES]
    assert all(item.worker == remote.worker for item in history[1:])


def test_range_test_follows_its_formula_and_ends_with_schedule_ended(
    keeper: LRKeeper, run_id: str
) -> None:
    start_lr, end_lr, num_steps = 1e-4, 10.0, 30
    config = {
        "type": "LRRangeTest",
        "params": {"start_lr": start_lr, "end_lr": end_lr, "num_steps": num_steps, "mode": "exp"},
    }
    _, _, model, optimizer = twin_setups("sgd")
    remote = RemoteLRScheduler(optimizer, run_id, config, client=keeper)
    assert remote.monitor == "loss"
    stops: list[bool] = []
    for batch in batches(num_steps):
        loss = train_step(model, optimizer, batch)
        answer = remote.step(loss)
        k = answer.step
        expected = start_lr * (end_lr / start_lr) ** (k / num_steps)
        assert remote.get_last_lr() == [expected, expected]
        assert [group["lr"] for group in optimizer.param_groups] == [expected, expected]
        assert answer.stop is not None
        stops.append(answer.stop)

    assert stops == sorted(stops), "once stop is true it stays true"
    suggestion = keeper.lr_suggestion(run_id)
    assert start_lr <= suggestion.lr <= end_lr
    assert len(suggestion.curve) >= 10
    # Pipelined, the refusal is raised where the answer is needed: the optimizer's next step.
    remote.step(1.0)
    with pytest.raises(ScheduleEnded):
        optimizer.step()
