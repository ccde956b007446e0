"""ReduceLROnPlateau against real torch 2.13.0: lrs, best and counters through every metric."""

import copy
import json
import math
import random
import warnings
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

from service.schedules import registry
from service.schedules.errors import InvalidConfig, InvalidStepValue, MissingMetric
from service.schedules.plateau import ReduceLROnPlateau
from tests.schedules.torch_oracle import make_optimizer, run_in_torch

pytestmark = pytest.mark.torch

Groups = list[dict[str, Any]]
NAN, INF = math.nan, math.inf

SGD_GROUPS: Groups = [
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.01, "momentum": 0.9},
    {"lr": 1e-7, "momentum": 0.9},
]
ADAM_GROUPS: Groups = [{"lr": 0.001, "betas": [0.9, 0.999]}, {"lr": 0.5, "betas": [0.9, 0.999]}]


def build(groups: Groups, monitor: str = "val_loss", **params: Any) -> ReduceLROnPlateau:
    scheduler = ReduceLROnPlateau(groups, ReduceLROnPlateau.Params(**params), monitor=monitor)
    scheduler.start()
    return scheduler


def restore(config_groups: Groups, saved: Any, **params: Any) -> ReduceLROnPlateau:
    """What the service does with a stored run: registry.restore from config, groups and state."""
    state = json.loads(json.dumps(saved, allow_nan=False))
    config = {"type": "ReduceLROnPlateau", "params": params}
    restored = registry.restore(config, copy.deepcopy(config_groups), state)
    assert isinstance(restored, ReduceLROnPlateau)
    return restored


def engine_lrs(
    groups: Groups,
    metrics: list[float],
    lr_edits: dict[int, list[float]] | None = None,
    restore_at: int | None = None,
    **params: Any,
) -> list[list[float]]:
    edits = lr_edits or {}
    scheduler = build(copy.deepcopy(groups), **params)
    recorded = [scheduler.lrs()]
    if 0 in edits:
        scheduler.set_lr(edits[0])
    for step, metric in enumerate(metrics, start=1):
        if step == restore_at:
            scheduler = restore(groups, scheduler.state(), **params)
        recorded.append(scheduler.step(metric).lr)
        if step in edits:
            scheduler.set_lr(edits[step])
    return recorded


def torch_lrs(
    groups: Groups,
    metrics: list[float],
    lr_edits: dict[int, list[float]] | None = None,
    **params: Any,
) -> list[list[float]]:
    run = run_in_torch(
        {"type": "ReduceLROnPlateau", "params": params},
        groups,
        len(metrics),
        metrics=metrics,
        lr_edits=lr_edits,
    )
    assert run.error is None, run.error
    return run.lr


def metric_sequence(rng: random.Random, length: int) -> list[float]:
    """Improvements, plateaus, sub-threshold gains, regressions and non-finite values."""
    value = rng.uniform(-2.0, 5.0)
    metrics = []
    while len(metrics) < length:
        kind = rng.random()
        if kind < 0.3:
            value -= rng.uniform(0.0, 0.5)
            metrics.append(value)
        elif kind < 0.55:
            metrics.extend([value] * rng.randint(1, 15))
        elif kind < 0.7:
            value *= 1 - 1e-5
            metrics.append(value)
        elif kind < 0.85:
            metrics.append(value + rng.uniform(0.0, 1.0))
        else:
            metrics.append(rng.choice([NAN, INF, -INF, NAN]))
    return metrics[:length]


def finite_metric_sequence(rng: random.Random, length: int) -> list[float]:
    return [metric for metric in metric_sequence(rng, length * 2) if math.isfinite(metric)][:length]


@pytest.mark.parametrize("seed", range(24))
def test_plateau_matches_torch_on_mixed_metric_sequences(seed: int) -> None:
    rng = random.Random(seed)
    groups = copy.deepcopy(rng.choice([SGD_GROUPS, ADAM_GROUPS, SGD_GROUPS[:1]]))
    params: dict[str, Any] = {
        "mode": rng.choice(["min", "max"]),
        "factor": rng.choice([0.1, 0.5, 0.9, 0.0]),
        "patience": rng.choice([-1, 0, 1, 3, 10]),
        "threshold": rng.choice([1e-4, 0.0, 0.1, 1.0]),
        "threshold_mode": rng.choice(["rel", "abs"]),
        "cooldown": rng.choice([0, 1, 4]),
        "min_lr": rng.choice([0, 1e-4, [0.05 * i for i in range(len(groups))]]),
        "eps": rng.choice([1e-8, 0.0, 0.01]),
    }
    # Non-finite metrics only in half the cases: with them, best often sticks at ±inf early.
    make_metrics = metric_sequence if seed % 2 else finite_metric_sequence
    metrics = make_metrics(rng, 600)
    assert engine_lrs(groups, metrics, **params) == torch_lrs(groups, metrics, **params)


@pytest.mark.parametrize(
    ("mode", "metrics"),
    [
        ("min", [1.0, NAN, NAN, 1.0, NAN, 0.5, NAN, NAN, NAN, NAN]),
        ("min", [INF, INF, INF, 2.0, INF, INF, INF, INF]),
        ("min", [3.0, -INF, 2.0, -5.0, -INF, 1.0, 1.0, 1.0]),
        ("max", [-INF, -INF, -INF, 1.0, INF, 5.0, 5.0, INF, NAN]),
        ("max", [NAN, NAN, NAN, -INF, NAN, NAN]),
    ],
)
def test_plateau_treats_non_finite_metrics_exactly_as_torch(
    mode: str, metrics: list[float]
) -> None:
    groups = SGD_GROUPS
    params = {"mode": mode, "patience": 1, "factor": 0.5}
    optimizer = make_optimizer(groups)
    oracle = lr_scheduler.ReduceLROnPlateau(optimizer, **params)
    scheduler = build(copy.deepcopy(groups), **params)
    for metric in metrics:
        oracle.step(metric)
        scheduler.step(metric)
        assert scheduler.lrs() == [group["lr"] for group in optimizer.param_groups]
        assert scheduler.best == oracle.best or (
            math.isnan(scheduler.best) and math.isnan(oracle.best)
        )
        assert scheduler.num_bad_epochs == oracle.num_bad_epochs
        assert not math.isnan(scheduler.best)


def test_plateau_threshold_one_in_min_rel_mode_never_sees_an_improvement() -> None:
    """inf·0 is NaN in torch's ``a < best * (1 - threshold)``: every step is a bad one."""
    metrics = [1.0, 0.5, 0.1, -3.0, -100.0, -1e9]
    params = {"threshold": 1.0, "patience": 1}
    scheduler = build(copy.deepcopy(SGD_GROUPS), **params)
    for metric in metrics:
        scheduler.step(metric)
    assert scheduler.best == INF
    assert engine_lrs(SGD_GROUPS, metrics, **params) == torch_lrs(SGD_GROUPS, metrics, **params)


def test_plateau_state_carries_non_finite_best_through_strict_json() -> None:
    scheduler = build(copy.deepcopy(SGD_GROUPS))
    assert scheduler.state()["best"] == "Infinity"
    scheduler.step(-INF)
    saved = scheduler.state()
    assert saved["best"] == "-Infinity"
    json.dumps(saved, allow_nan=False)
    assert restore(SGD_GROUPS, saved).best == -INF
    max_mode = build(copy.deepcopy(SGD_GROUPS), mode="max")
    assert max_mode.state()["best"] == "-Infinity"


def test_plateau_state_holds_torchs_counters() -> None:
    scheduler = build(copy.deepcopy(SGD_GROUPS), patience=2, cooldown=3)
    for metric in [1.0, 1.0, 1.0, 1.0, 1.0]:
        scheduler.step(metric)
    state = scheduler.state()
    assert {
        key: state[key] for key in ("last_epoch", "best", "num_bad_epochs", "cooldown_counter")
    } == {
        "last_epoch": 5,
        "best": 1.0,
        "num_bad_epochs": 0,
        "cooldown_counter": 2,
    }


@pytest.mark.parametrize("restore_at", [1, 7, 33, 150])
def test_plateau_restored_mid_run_continues_exactly(restore_at: int) -> None:
    rng = random.Random(7)
    metrics = metric_sequence(rng, 300)
    params = {"patience": 2, "cooldown": 2, "factor": 0.5, "min_lr": [1e-3, 1e-4, 0]}
    assert engine_lrs(SGD_GROUPS, metrics, restore_at=restore_at, **params) == torch_lrs(
        SGD_GROUPS, metrics, **params
    )


def test_plateau_reduces_hand_edited_lrs_as_torch() -> None:
    rng = random.Random(11)
    metrics = finite_metric_sequence(rng, 200)
    edits = {0: [0.5, 0.5, 0.5], 20: [1.0, 1e-9, 0.3], 21: [0.02, 0.02, 0.02], 90: [2.0, 0, 0.1]}
    params = {"patience": 1, "factor": 0.3, "min_lr": 1e-3}
    assert engine_lrs(SGD_GROUPS, metrics, edits, **params) == torch_lrs(
        SGD_GROUPS, metrics, edits, **params
    )


def test_plateau_leaves_groups_alone_at_construction() -> None:
    groups = copy.deepcopy(SGD_GROUPS)
    scheduler = build(groups)
    assert groups == SGD_GROUPS
    assert "initial_lr" not in groups[0]
    assert scheduler.outcome().lr == [0.1, 0.01, 1e-7]
    assert scheduler.outcome().step == 0
    assert scheduler.outcome().momentum is None


def test_plateau_reduction_event_lists_every_group_before_and_after() -> None:
    params = {"patience": 1, "factor": 0.5, "min_lr": [0, 0.008, 0], "eps": 1e-7}
    scheduler = build(copy.deepcopy(SGD_GROUPS), **params)
    events = [scheduler.step(metric).events for metric in [1.0, 1.0, 1.0, 1.0, 1.0]]
    assert [len(step_events) for step_events in events] == [0, 0, 1, 0, 1]
    first = events[2][0]
    assert first.kind == "plateau_reduction"
    # group 2 (1e-7 → 5e-8) moves less than eps and keeps its lr; group 1 stops at min_lr.
    assert first.detail == {"from": [0.1, 0.01, 1e-7], "to": [0.05, 0.008, 1e-7]}
    assert events[4][0].detail == {"from": [0.05, 0.008, 1e-7], "to": [0.025, 0.008, 1e-7]}


def test_plateau_without_any_lr_change_emits_no_event() -> None:
    scheduler = build([{"lr": 0.001, "momentum": 0.9}], patience=0, min_lr=0.001)
    outcomes = [scheduler.step(1.0) for _ in range(5)]
    assert all(outcome.events == [] for outcome in outcomes)
    assert scheduler.lrs() == [0.001]


def test_plateau_reads_its_monitor_from_named_metrics() -> None:
    scheduler = build(copy.deepcopy(SGD_GROUPS), monitor="val_acc", mode="max", patience=0)
    assert scheduler.uses_metric
    assert ReduceLROnPlateau.default_monitor == "val_loss"
    scheduler.step({"val_acc": 0.5, "val_loss": 9.0})
    scheduler.step({"val_acc": 0.4, "val_loss": 0.1})
    assert scheduler.lrs()[0] == 0.1 * 0.1
    scheduler.step(0.3)
    assert scheduler.num_bad_epochs == 0 and scheduler.lrs()[0] == 0.1 * 0.1 * 0.1


def test_plateau_step_without_its_metric_changes_nothing() -> None:
    scheduler = build(copy.deepcopy(SGD_GROUPS), patience=0)
    scheduler.step(1.0)
    state_before = scheduler.state()
    with pytest.raises(MissingMetric):
        scheduler.step({"train_loss": 0.1})
    with pytest.raises(MissingMetric):
        scheduler.step(None)
    assert scheduler.state() == state_before


def test_plateau_as_a_later_child_starts_from_the_lr_it_finds() -> None:
    """A SequentialLR milestone hands over whatever lr the previous child left; base_lrs unused."""
    handed_over = [{"lr": 0.0123, "momentum": 0.9, "initial_lr": 0.5}]
    scheduler = build(copy.deepcopy(SGD_GROUPS[:1]), patience=1)
    scheduler.groups[:] = copy.deepcopy(handed_over)
    scheduler.base_lrs = [123.0]
    scheduler.restart_at_zero()
    assert scheduler.lrs() == [0.0123]
    optimizer = make_optimizer([{"lr": 0.0123, "momentum": 0.9}])
    oracle = lr_scheduler.ReduceLROnPlateau(optimizer, patience=1)
    for metric in [2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]:
        oracle.step(metric)
        assert scheduler.step(metric).lr == [group["lr"] for group in optimizer.param_groups]
    assert scheduler.lrs() != [0.0123]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"factor": 1.0}, "factor"),
        ({"factor": 2, "min_lr": [0.1], "mode": "up"}, "factor"),
        ({"min_lr": [0.1, 0.2]}, "min_lr"),
        ({"min_lr": [0.1], "mode": "up", "threshold_mode": "x"}, "min_lr"),
        ({"mode": "up", "threshold_mode": "x"}, "mode"),
        ({"threshold_mode": "relative"}, "threshold_mode"),
    ],
)
def test_plateau_refusals_carry_torchs_message_in_torchs_order(
    params: dict[str, Any], field: str
) -> None:
    groups = [{"lr": 0.1, "momentum": 0.9}] * 3
    optimizer = make_optimizer(groups)
    with pytest.raises(ValueError) as torch_refusal:
        lr_scheduler.ReduceLROnPlateau(optimizer, **params)
    with pytest.raises(InvalidConfig) as refused:
        ReduceLROnPlateau(copy.deepcopy(groups), ReduceLROnPlateau.Params(**params))
    assert refused.value.loc == ("params", field)
    assert refused.value.message == str(torch_refusal.value)


def test_plateau_negative_factor_reaches_an_int_min_lr_as_torch() -> None:
    """max(lr·factor, 0) is torch's default int 0 once lr·factor is negative."""
    metrics = [1.0] * 6
    params = {"factor": -0.5, "patience": 0}
    expected = torch_lrs(SGD_GROUPS, metrics, **params)
    got = engine_lrs(SGD_GROUPS, metrics, **params)
    assert got == expected
    assert [type(lr) for lr in got[-1]] == [type(lr) for lr in expected[-1]]


def test_plateau_matches_torch_over_a_long_noisy_run() -> None:
    rng = random.Random(2024)
    metrics = metric_sequence(rng, 5000)
    params = {"patience": 5, "cooldown": 2, "threshold": 1e-3, "min_lr": 1e-6}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert engine_lrs(ADAM_GROUPS, metrics, **params) == torch_lrs(
            ADAM_GROUPS, metrics, **params
        )


def test_plateau_best_matches_torch_after_every_step() -> None:
    rng = random.Random(5)
    metrics = metric_sequence(rng, 400)
    optimizer = torch.optim.SGD([torch.zeros(1)], lr=0.1, momentum=0.9)
    oracle = lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", threshold_mode="abs", patience=2)
    scheduler = build([{"lr": 0.1, "momentum": 0.9}], threshold_mode="abs", patience=2)
    for metric in metrics:
        oracle.step(metric)
        scheduler.step(metric)
        assert (scheduler.best, scheduler.num_bad_epochs, scheduler.cooldown_counter) == (
            oracle.best,
            oracle.num_bad_epochs,
            oracle.cooldown_counter,
        )


def test_plateau_step_failing_on_a_huge_int_threshold_names_it_and_changes_nothing() -> None:
    # JSON ints have no size limit; torch's threshold arithmetic overflows at the step.
    scheduler = build(copy.deepcopy(SGD_GROUPS), threshold=10**400)
    before = scheduler.state()
    with pytest.raises(InvalidStepValue) as caught:
        scheduler.step({"val_loss": 1.0})
    assert caught.value.step == 1
    assert scheduler.state() == before


@pytest.mark.parametrize("metrics", [0.5, 1, True, {"val_loss": 0.5, "loss": 9.0}])
def test_plateau_reads_a_bare_number_or_its_monitor_alike(metrics: Any) -> None:
    reference = build(copy.deepcopy(SGD_GROUPS), patience=0)
    scheduler = build(copy.deepcopy(SGD_GROUPS), patience=0)
    value = metrics["val_loss"] if isinstance(metrics, dict) else float(metrics)
    for _ in range(3):
        assert scheduler.step(metrics).lr == reference.step(value).lr
    assert scheduler.best == reference.best == value


@pytest.mark.parametrize("metrics", [None, {}, {"loss": 0.5}])
def test_plateau_without_its_monitor_raises_missing_metric(metrics: Any) -> None:
    scheduler = build(copy.deepcopy(SGD_GROUPS))
    with pytest.raises(MissingMetric):
        scheduler.step(metrics)
