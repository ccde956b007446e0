"""The engine against torch 2.13.0's recorded values, float for float, without torch installed.

Every case in ``golden/<type>.json.gz`` (written by ``python -m tests.schedules.make_golden``)
holds a config, param groups, metrics, hand edits of the lr, and what torch's param
groups held after every step. The engine replays the case — taking ``set_lr`` for
torch's hand edit and, where the case says so, continuing from a JSON round trip of
its ``state()`` through ``restore`` — and must produce the same lr and momentum
with ``==`` (NaN equal to NaN, nothing else loosened).

The replay and comparison helpers here are shared with the live hypothesis suite.
"""

import copy
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.schedules import InvalidConfig, ScheduleError, build, restore
from tests.schedules.make_golden import FAMILIES, Case, load_golden_cases


@dataclass
class EngineRun:
    """What the engine reported at step 0 and after every step, and how it stopped, if it did."""

    steps: list[int] = field(default_factory=list)
    lr: list[list[float]] = field(default_factory=list)
    momentum: list[list[float] | None] = field(default_factory=list)
    error_step: int | None = None
    error: BaseException | None = None
    restore_difference: str | None = None


def json_round_trip(state: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON (no bare NaN / Infinity), as a PostgreSQL JSON column needs it."""
    return json.loads(json.dumps(state, allow_nan=False))


def replay_on_engine(case: Case) -> EngineRun:
    """Run ``case`` on the engine; ``InvalidConfig`` from ``build`` propagates.

    Order after step k: record, apply the hand edit of step k, then (if asked) restore
    from the JSON round-tripped state, so a restore also carries an edit made just before.
    Any exception while stepping ends the run and is kept with its step.
    """
    run = EngineRun()
    scheduler = build(copy.deepcopy(case.scheduler), copy.deepcopy(case.param_groups))
    outcome = scheduler.outcome()
    for step in range(case.steps + 1):
        if step > 0:
            metrics = None if case.metrics is None else {case.monitor: case.metrics[step - 1]}
            try:
                outcome = scheduler.step(metrics)
            except Exception as error:  # compared with torch's exception below
                run.error_step, run.error = step, error
                return run
        run.steps.append(outcome.step)
        run.lr.append(list(outcome.lr))
        run.momentum.append(None if outcome.momentum is None else list(outcome.momentum))
        if step in case.lr_edits:
            scheduler.set_lr(list(case.lr_edits[step]))
        if step in case.restore_after:
            state = json_round_trip(scheduler.state())
            scheduler = restore(
                copy.deepcopy(case.scheduler), copy.deepcopy(case.param_groups), state
            )
            restored_state = json_round_trip(scheduler.state())
            if restored_state != state and run.restore_difference is None:
                run.restore_difference = (
                    f"after step {step}: restore(state).state() differs from the saved state"
                    f"\n  saved:    {json.dumps(state)}\n  restored: {json.dumps(restored_state)}"
                )
    return run


def same_value(expected: Any, actual: Any) -> bool:
    """Exact equality of the same Python type (torch keeps an int lr an int where its arithmetic
    does); NaN matches NaN only because torch itself produced a NaN there."""
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(actual)
    return expected == actual


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value!r} ({value.hex()})"
    return repr(value)


def _first_value_difference(
    what: str, expected: list[list[float]], actual: list[list[float] | None], count: int
) -> str | None:
    for step in range(count):
        expected_row, actual_row = expected[step], actual[step]
        if actual_row is None or len(actual_row) != len(expected_row):
            return f"step {step}: {what} torch {expected_row!r}, engine {actual_row!r}"
        for index, (want, got) in enumerate(zip(expected_row, actual_row, strict=True)):
            if not same_value(want, got):
                return (
                    f"step {step}, group {index}: {what} torch {_show(want)}, engine {_show(got)}"
                    f" (torch row {expected_row!r}, engine row {actual_row!r})"
                )
    return None


def first_difference(case: Case, run: EngineRun) -> str | None:
    """The first place the engine departs from torch, described for a bug report; None if none."""
    torch_stop = None if case.torch_error is None else case.torch_error["step"]
    if run.restore_difference is not None:
        return run.restore_difference
    expected_rows = len(case.expected_lr)
    compared = min(expected_rows, len(run.lr))
    for step in range(compared):
        if run.steps[step] != step:
            return f"step {step}: engine reports step {run.steps[step]}"
    difference = _first_value_difference("lr", case.expected_lr, run.lr, compared)
    if difference is not None:
        return difference
    if case.expected_momentum is None:
        for step in range(compared):
            if run.momentum[step] is not None:
                return f"step {step}: engine reports momentum {run.momentum[step]!r}, torch none"
    else:
        difference = _first_value_difference(
            "momentum", case.expected_momentum, run.momentum, compared
        )
        if difference is not None:
            return difference
    if run.error is not None and run.error_step != torch_stop:
        return (
            f"step {run.error_step}: engine raised {type(run.error).__name__}: {run.error}"
            f" where torch {'went on' if torch_stop is None else f'failed at step {torch_stop}'}"
        )
    if torch_stop is not None:
        if run.error is None:
            return (
                f"step {torch_stop}: torch raised {case.torch_error['type']}:"
                f" {case.torch_error['message']}; engine went on"
            )
        if not isinstance(run.error, ScheduleError) or isinstance(run.error, InvalidConfig):
            return (
                f"step {torch_stop}: engine raised {type(run.error).__name__}: {run.error};"
                f" expected a ScheduleError (InvalidStepValue / StepPastEnd) where torch raised"
                f" {case.torch_error['type']}: {case.torch_error['message']}"
            )
    return None


def describe_case(case: Case) -> str:
    return (
        f"{case.name}\n  scheduler: {json.dumps(case.scheduler)}\n"
        f"  param_groups: {json.dumps(case.param_groups)}\n"
        f"  steps: {case.steps}, lr_edits: {case.lr_edits}, restore_after: {case.restore_after}"
    )


def assert_engine_matches(case: Case) -> None:
    try:
        run = replay_on_engine(case)
    except InvalidConfig as refusal:
        pytest.fail(f"engine refused a config torch runs: {refusal}\n{describe_case(case)}")
    difference = first_difference(case, run)
    if difference is not None:
        pytest.fail(f"{difference}\n{describe_case(case)}")


GOLDEN_CASES = [case for family in FAMILIES for case in load_golden_cases(family)]


def test_golden_files_cover_every_torch_type() -> None:
    assert {case.family for case in GOLDEN_CASES} == set(FAMILIES)


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=[case.name for case in GOLDEN_CASES])
def test_engine_reproduces_torch_values_step_by_step(case: Case) -> None:
    assert_engine_matches(case)
