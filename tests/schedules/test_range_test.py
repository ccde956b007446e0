"""LRRangeTest and suggest(): the contract's lr formula and smoothing, stop, state, suggestions."""

import json
import math
import random
from collections.abc import Callable

import pytest

from service.schedules.base import StepOutcome
from service.schedules.errors import InvalidConfig, MissingMetric, StepPastEnd
from service.schedules.range_test import (
    METHODS,
    LRRangeTest,
    NotEnoughData,
    smoothed_curve,
    suggest,
    valley_index,
)
from service.schedules.registry import build, restore

GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "betas": [0.9, 0.999]}]


def range_test_config(**params: object) -> dict[str, object]:
    return {
        "type": "LRRangeTest",
        "params": {"start_lr": 1e-6, "end_lr": 1.0, "num_steps": 100, **params},
    }


def run(losses: list[float], **params: object) -> tuple[LRRangeTest, list[StepOutcome]]:
    scheduler = build(range_test_config(num_steps=len(losses), **params), GROUPS)
    assert isinstance(scheduler, LRRangeTest)
    return scheduler, [scheduler.step({"loss": loss}) for loss in losses]


def contract_smoothed(losses: list[float]) -> list[float]:
    """The API's smoothing, written out: avg = 0.98·avg + 0.02·loss, avg / (1 − 0.98^k)."""
    smoothed, avg = [], 0.0
    for k, loss in enumerate(losses, start=1):
        avg = 0.98 * avg + 0.02 * loss
        smoothed.append(avg / (1 - 0.98**k))
    return smoothed


# -- the lr sweep -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "formula"),
    [
        ("exp", lambda start, end, k, n: start * (end / start) ** (k / n)),
        ("linear", lambda start, end, k, n: start + (end - start) * k / n),
    ],
)
def test_every_group_gets_the_contract_lr_at_every_step(
    mode: str, formula: Callable[[float, float, int, int], float]
) -> None:
    start_lr, end_lr, num_steps = 1e-7, 10.0, 37
    scheduler = build(
        range_test_config(start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, mode=mode),
        GROUPS,
    )
    assert scheduler.outcome().lr == [start_lr, start_lr]
    for k in range(1, num_steps + 1):
        expected = formula(start_lr, end_lr, k, num_steps)
        assert scheduler.step({"loss": 1.0}).lr == [expected, expected]
    assert scheduler.lrs()[0] == pytest.approx(end_lr)


def test_mode_defaults_to_exp() -> None:
    scheduler = build(range_test_config(num_steps=6), GROUPS)
    lrs = [scheduler.step({"loss": 1.0}).lr[0] for _ in range(6)]
    assert lrs == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_construction_records_initial_lr_like_torch() -> None:
    scheduler = build(range_test_config(), GROUPS)
    assert [group["initial_lr"] for group in scheduler.groups] == [0.1, 0.01]
    assert scheduler.base_lrs == [0.1, 0.01]
    assert scheduler.outcome().stop is False


def test_step_past_the_end_is_refused_and_changes_nothing() -> None:
    scheduler, _ = run([1.0, 0.9, 0.8])
    state_before = scheduler.state()
    with pytest.raises(StepPastEnd) as refused:
        scheduler.step({"loss": 0.7})
    assert (refused.value.step, refused.value.total_steps) == (4, 3)
    assert scheduler.state() == state_before


def test_step_without_the_loss_is_refused_and_changes_nothing() -> None:
    scheduler = build(range_test_config(), GROUPS)
    scheduler.step({"loss": 2.0})
    state_before = scheduler.state()
    for metrics in (None, {"val_loss": 1.0}):
        with pytest.raises(MissingMetric):
            scheduler.step(metrics)
    assert scheduler.state() == state_before
    assert scheduler.uses_metric


def test_monitor_names_the_metric_read() -> None:
    scheduler = build({**range_test_config(), "monitor": "train_loss"}, GROUPS)
    with pytest.raises(MissingMetric, match="train_loss"):
        scheduler.step({"loss": 1.0})
    assert scheduler.step({"train_loss": 1.0}).step == 1


# -- smoothing and stop -------------------------------------------------------------


def test_curve_pairs_each_smoothed_loss_with_the_lr_it_was_measured_at() -> None:
    losses = [2.0, 1.9, 2.1, 1.5, 1.2, 1.0]
    scheduler, _ = run(losses)
    previous_lrs = [scheduler.lr_at(k) for k in range(len(losses))]
    assert smoothed_curve(previous_lrs, losses) == [
        [lr, smoothed] for lr, smoothed in zip(previous_lrs, contract_smoothed(losses), strict=True)
    ]
    assert scheduler.avg == pytest.approx(contract_smoothed(losses)[-1] * (1 - 0.98**6))


def test_rebuilt_curve_ends_at_the_average_the_steps_kept() -> None:
    losses = [2.0, 1.9, 2.1, 1.5, 1.2, 1.0, 0.7]
    scheduler, _ = run(losses)
    last_smoothed = smoothed_curve([scheduler.lr_at(k) for k in range(7)], losses)[-1][1]
    assert last_smoothed == scheduler.avg / (1 - 0.98**7)


def test_stop_comes_at_the_first_step_above_four_times_the_minimum_and_stays() -> None:
    losses = [1.0, 1.0, 1.0, 1000.0, 0.5, 0.5]
    scheduler, outcomes = run(losses)
    assert [outcome.stop for outcome in outcomes] == [False, False, False, True, True, True]
    events = [event for outcome in outcomes for event in outcome.events]
    assert [event.kind for event in events] == ["range_test_stop"]
    assert events[0] is outcomes[3].events[0]
    detail = events[0].detail
    assert detail["step"] == 4
    assert detail["reason"] == "diverged"
    assert detail["lr"] == scheduler.lr_at(3)
    assert detail["smoothed_loss"] == contract_smoothed(losses)[3]
    assert detail["min_smoothed_loss"] == min(contract_smoothed(losses)[:4])


def test_smoothed_loss_just_under_four_times_the_minimum_does_not_stop() -> None:
    losses = [1.0] * 5 + [9.0]
    smoothed = contract_smoothed(losses)
    assert smoothed[-1] < 4 * min(smoothed)
    _, outcomes = run(losses)
    assert not any(outcome.stop for outcome in outcomes)


@pytest.mark.parametrize("bad_loss", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_counts_as_divergence(bad_loss: float) -> None:
    scheduler, outcomes = run([1.0, 0.9, bad_loss, 0.5, 0.4])
    assert [outcome.stop for outcome in outcomes] == [False, False, True, True, True]
    assert outcomes[2].events[0].detail["reason"] == "non_finite_loss"
    assert not outcomes[3].events and not outcomes[4].events
    json.dumps([event.detail for event in outcomes[2].events], allow_nan=False)
    json.dumps(scheduler.state(), allow_nan=False)


def test_negative_losses_never_count_as_divergence_by_ratio() -> None:
    _, outcomes = run([-1.0, -2.0, -1.5, -0.5, -0.1])
    assert not any(outcome.stop for outcome in outcomes)


# -- state --------------------------------------------------------------------------


def test_restored_range_test_continues_bit_exactly() -> None:
    rng = random.Random(7)
    losses = [2.0 - k / 100 + rng.gauss(0, 0.05) for k in range(60)] + [math.nan, 9.0, 1.0]
    config = range_test_config(num_steps=len(losses))
    original = build(config, GROUPS)
    for loss in losses[:30]:
        original.step({"loss": loss})
    saved = json.loads(json.dumps(original.state(), allow_nan=False))
    resumed = restore(config, GROUPS, saved)
    for loss in losses[30:]:
        expected, actual = original.step({"loss": loss}), resumed.step({"loss": loss})
        assert (actual.lr, actual.stop, actual.events) == (
            expected.lr,
            expected.stop,
            expected.events,
        )
    assert json.dumps(resumed.state(), allow_nan=False) == json.dumps(
        original.state(), allow_nan=False
    )


def test_state_holds_average_minimum_and_stop_flag_but_no_curve() -> None:
    scheduler = build(range_test_config(), GROUPS)
    initial = scheduler.state()
    assert (initial["avg"], initial["best_loss"], initial["stopped"]) == (0.0, "Infinity", False)
    scheduler.step({"loss": 3})
    assert "curve" not in scheduler.state()
    assert scheduler.state()["best_loss"] == contract_smoothed([3.0])[0]


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start_lr": 0.0}, "start_lr"),
        ({"start_lr": -1e-3}, "start_lr"),
        ({"end_lr": 1e-6}, "end_lr"),
        ({"end_lr": 1e-7}, "end_lr"),
        ({"start_lr": 1e-300, "end_lr": 1e300}, "end_lr"),
        ({"end_lr": 10**400}, "end_lr"),
        ({"end_lr": math.inf}, "end_lr"),
        ({"start_lr": math.nan}, "start_lr"),
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": 10_001}, "num_steps"),
        ({"mode": "cos"}, "mode"),
    ],
)
def test_invalid_params_are_refused_naming_the_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig) as refused:
        build(range_test_config(**params), GROUPS)
    assert refused.value.loc == ("scheduler", "params", field)


def test_class_refuses_a_non_int_step_count_on_its_own() -> None:
    params = LRRangeTest.Params(start_lr=1e-6, end_lr=1.0, num_steps=2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig) as refused:
        LRRangeTest([{"lr": 0.1}], params)
    assert refused.value.loc == ("params", "num_steps")


# -- suggest ------------------------------------------------------------------------
# A loss known in closed form over log10(lr) = x: flat at 2.5 up to x = -4, a cosine
# fall to 0.5 over -4 < x < -1 (steepest at x = -2.5, fallen by 10 % of its 2.0 at
# x = -4 + 3·acos(0.8)/π ≈ -3.3855), bottom at x = -1, then a parabola upwards.
STEEPEST_X, CLEAR_FALL_X, BOTTOM_X = -2.5, -4 + 3 * math.acos(0.8) / math.pi, -1.0


def known_loss(x: float) -> float:
    if x <= -4:
        return 2.5
    if x <= -1:
        return 1.5 + math.cos(math.pi * (x + 4) / 3)
    return 0.5 + 10 * (x + 1) ** 2


def test_suggestion_on_a_known_curve_finds_its_points() -> None:
    xs = [-6 + i / 100 for i in range(701)]
    curve = [[10**x, known_loss(x)] for x in xs]
    suggestion = suggest(curve)
    grid = 0.01 + 1e-9
    assert abs(math.log10(suggestion["lr"]) - STEEPEST_X) < grid
    assert abs(math.log10(suggestion["max_lr"]) - BOTTOM_X) < grid
    assert abs(math.log10(suggestion["min_loss_lr"]) - (BOTTOM_X - 1)) < grid
    assert 0 <= math.log10(suggestion["base_lr"]) - CLEAR_FALL_X < grid
    assert suggestion["method"] == "steepest"
    assert suggestion["suggestions"]["steepest"] == suggestion["lr"]
    assert suggestion["suggestions"]["minimum"] == suggestion["min_loss_lr"]
    assert suggestion["curve"] == curve


def test_each_method_answers_its_own_point_as_lr_and_all_three_by_name() -> None:
    # The cosine falls strictly from x = -4 (point 200, the flat part's last) to x = -1
    # (point 500): the longest valley, 301 points. The first tenth (70 points) is not
    # read, so end = 430, start = 430 - 301 = 129 and L = 301: the suggestion is point
    # 70 + 129 + int(301 / 3) + int(301 / 6) = 349, x = -2.51.
    xs = [-6 + i / 100 for i in range(701)]
    curve = [[10**x, known_loss(x)] for x in xs]
    answers = {method: suggest(curve, method=method) for method in METHODS}
    by_name = answers["steepest"]["suggestions"]
    assert by_name["valley"] == 10 ** xs[349]
    assert by_name["minimum"] == 10 ** xs[500] / 10
    for method, answer in answers.items():
        assert answer["method"] == method
        assert answer["lr"] == by_name[method]
        assert answer["suggestions"] == by_name
        assert answer["max_lr"] == answers["steepest"]["max_lr"]


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        suggest([[10**-i, 1.0] for i in range(20)], method="slide")


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        # One falling run over all 7 points: end 6, start 6 - 7 = -1, L = 7: -1 + 2 + 1.
        ([7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 2),
        # Ties do not fall: [3, 3, 2, 1] falls over 3 points (one of the 3s), end 3,
        # start 0, L = 3: 0 + 1 + 0.
        ([3.0, 3.0, 2.0, 1.0], 1),
        # The longer of two valleys wins, even the later one: 9 8 | 9 7 6 5 4 3 2 1 holds
        # 9 8 7 6 5 4 3 2 1 (9 points) ending at point 9: start 0, L = 9: 0 + 3 + 1.
        ([9.0, 8.0, 9.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 4),
        # A subsequence, not a contiguous stretch: a bump does not break the valley.
        # 10 9 8 | 8.5 | 7 6 5 4 3 2 1 1: the longest falls 10 9 8 7 6 5 4 3 2 1 (10
        # points) ending at point 10: start 0, L = 10: 0 + 3 + 1.
        ([10.0, 9.0, 8.0, 8.5, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 1.0], 4),
        # Rising all the way: every length is 1, the first point ends it: start -1, L = 1,
        # index -1, read as 0.
        ([1.0, 2.0, 3.0], 0),
    ],
)
def test_valley_index_follows_fastais_rule_on_hand_checked_curves(
    losses: list[float], expected: int
) -> None:
    assert valley_index(losses) == expected


def fastai_style_lengths(losses: list[float]) -> tuple[int, int]:
    """The longest falling subsequence by fastai's double loop: (its end, its length)."""
    lengths = [1] * len(losses)
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
    longest = max(lengths)
    return lengths.index(longest), longest


@pytest.mark.parametrize("seed", range(5))
def test_valley_index_finds_the_valley_the_double_loop_finds(seed: int) -> None:
    rng = random.Random(seed)
    losses = [rng.choice([1.0, 2.0, 3.0]) + rng.random() for _ in range(200)]
    end, length = fastai_style_lengths(losses)
    start = end - length
    assert valley_index(losses) == max(0, start + int(length / 3) + int(length / 6))


def test_linear_mode_takes_the_slope_against_lr_itself() -> None:
    # A gaussian flank 1 - 0.8·exp(-((lr - 0.5) / 0.15)²) up to its bottom at lr = 0.5,
    # then a parabola: against lr it falls fastest at 0.5 - 0.15/√2.
    lrs = [0.001 * i for i in range(1, 1001)]
    losses = [
        1.0 - 0.8 * math.exp(-(((lr - 0.5) / 0.15) ** 2)) if lr < 0.5 else 0.2 + 4 * (lr - 0.5) ** 2
        for lr in lrs
    ]
    curve = [[lr, loss] for lr, loss in zip(lrs, losses, strict=True)]
    suggestion = suggest(curve, mode="linear")
    assert suggestion["lr"] == pytest.approx(0.5 - 0.15 / math.sqrt(2), abs=0.0015)
    assert suggestion["max_lr"] == pytest.approx(0.5, abs=0.0015)
    # Against log10(lr) the same fall is steepest at a larger lr.
    assert suggest(curve, mode="exp")["lr"] > suggestion["lr"] + 0.01


def sweep_losses(num_steps: int, noise: float, seed: int) -> tuple[list[float], list[float]]:
    """Raw losses of a sweep from 1e-6 to 10: known_loss at the lr each batch ran at."""
    rng = random.Random(seed)
    xs = [-6 + 7 * k / num_steps for k in range(num_steps)]
    return xs, [known_loss(x) + rng.gauss(0, noise) for x in xs]


def run_sweep(losses: list[float]) -> tuple[LRRangeTest, list[StepOutcome]]:
    return run(losses, start_lr=1e-6, end_lr=10.0)


def sweep_suggestion(losses: list[float]) -> dict:
    """What the service answers: the curve rebuilt from the recorded lrs and losses."""
    scheduler, _ = run_sweep(losses)
    measured_lrs = [scheduler.lr_at(k) for k in range(len(losses))]
    return suggest(smoothed_curve(measured_lrs, losses))


def test_sweep_through_the_scheduler_finds_the_known_points_behind_the_average_lag() -> None:
    # The moving average lags ~49 steps (0.98 / 0.02), 0.17 decades at 2000 steps over 7.
    _, losses = sweep_losses(2000, noise=0.0, seed=0)
    _, outcomes = run_sweep(losses)
    suggestion = sweep_suggestion(losses)
    assert 0 < math.log10(suggestion["lr"]) - STEEPEST_X < 0.3
    assert 0 < math.log10(suggestion["max_lr"]) - BOTTOM_X < 0.3
    assert 0 < math.log10(suggestion["base_lr"]) - CLEAR_FALL_X < 0.3
    first_stop = next(i for i, outcome in enumerate(outcomes) if outcome.stop)
    assert first_stop > 0 and all(outcome.stop for outcome in outcomes[first_stop:])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noisy_sweep_suggests_what_the_clean_sweep_does(seed: int) -> None:
    # The cosine's slope stays within 10 % of its steepest over ±0.4 decades, so noise may
    # move the steepest point that far; the minimum and the clear fall are sharper.
    _, clean_losses = sweep_losses(2000, noise=0.0, seed=0)
    _, noisy_losses = sweep_losses(2000, noise=0.1, seed=seed)
    clean = sweep_suggestion(clean_losses)
    noisy = sweep_suggestion(noisy_losses)
    for key, decades in [("lr", 0.45), ("max_lr", 0.1), ("base_lr", 0.1), ("min_loss_lr", 0.1)]:
        assert abs(math.log10(noisy[key]) - math.log10(clean[key])) < decades, key


def test_fewer_than_ten_steps_is_not_enough_data() -> None:
    curve = [[10**-i, 1.0] for i in range(9)]
    with pytest.raises(NotEnoughData) as refused:
        suggest(curve)
    assert refused.value.usable_points == 9
    assert suggest([*curve, [10.0, 1.0]])["max_lr"] == 1.0


def test_points_after_a_non_finite_loss_are_not_read() -> None:
    curve = [[10 ** (i / 10), 2.0 - i / 100] for i in range(30)]
    curve[8][1] = math.nan
    with pytest.raises(NotEnoughData, match="non-finite after 8 steps"):
        suggest(curve)
    curve[8][1] = 1.92
    curve[25][1] = "Infinity"  # type: ignore[call-overload]
    suggestion = suggest(curve)
    assert suggestion["max_lr"] == curve[24][0]
    assert math.isinf(suggestion["curve"][25][1])


def test_flat_curve_gives_bounds_at_its_minimum() -> None:
    suggestion = suggest([[10 ** (i / 10), 1.0] for i in range(20)])
    assert suggestion["base_lr"] == suggestion["max_lr"] == 1.0
