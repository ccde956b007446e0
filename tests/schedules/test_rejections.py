"""Configs torch refuses are refused by the engine too, with a loc that names the field.

``golden/rejections.json.gz`` lists them with torch's own exception (recorded by
``make_golden`` from torch 2.13.0): what torch's constructor raises on, and what it
accepts but can only crash on later (StepLR ``step_size=0``, ConstantLR ``factor=0``,
CosineAnnealingLR ``T_max=0``, ...), which API.md wants refused at creation. For the
crash-later configs API.md does not name, the engine may instead accept the config,
agree with torch on every step, and raise a ScheduleError at torch's crash step.
"""

import copy

import pytest

from service.schedules import InvalidConfig, build
from tests.schedules.make_golden import Rejection, load_rejections
from tests.schedules.test_parity_golden import describe_case, first_difference, replay_on_engine

REJECTIONS = load_rejections()
CONSTRUCTOR = [rejection for rejection in REJECTIONS if rejection.kind == "constructor"]
CRASH_LATER = [rejection for rejection in REJECTIONS if rejection.kind == "crash_later"]


def _describe(rejection: Rejection) -> str:
    return (
        f"{rejection.name}: torch {rejection.torch_type}: {rejection.torch_message!r}"
        f" (step {rejection.crash_step or 0})\n  scheduler: {rejection.scheduler}\n"
        f"  param_groups: {rejection.param_groups}\n  expected loc starting with one of"
        f" {rejection.locs}"
    )


def _assert_loc_names_the_field(refusal: InvalidConfig, rejection: Rejection) -> None:
    assert any(list(refusal.loc[: len(loc)]) == loc for loc in rejection.locs), (
        f"engine refused with loc {list(refusal.loc)} ({refusal.message!r})\n{_describe(rejection)}"
    )


@pytest.mark.parametrize("rejection", CONSTRUCTOR, ids=[item.name for item in CONSTRUCTOR])
def test_config_torch_refuses_is_refused_naming_the_field(rejection: Rejection) -> None:
    with pytest.raises(InvalidConfig) as refused:
        build(copy.deepcopy(rejection.scheduler), copy.deepcopy(rejection.param_groups))
    _assert_loc_names_the_field(refused.value, rejection)


@pytest.mark.parametrize("rejection", CRASH_LATER, ids=[item.name for item in CRASH_LATER])
def test_config_torch_can_only_crash_on_is_refused_or_fails_at_torchs_step(
    rejection: Rejection,
) -> None:
    assert rejection.case is not None
    try:
        run = replay_on_engine(rejection.case)
    except InvalidConfig as refusal:
        _assert_loc_names_the_field(refusal, rejection)
        return
    if rejection.must_refuse:
        pytest.fail(f"engine accepted a config API.md says to refuse\n{_describe(rejection)}")
    difference = first_difference(rejection.case, run)
    assert difference is None, f"{difference}\n{describe_case(rejection.case)}"


def test_rejection_list_records_torchs_exception_for_each_entry() -> None:
    assert CONSTRUCTOR and CRASH_LATER
    for rejection in REJECTIONS:
        assert rejection.torch_type, rejection.name  # NotImplementedError comes without a message
        assert rejection.locs, rejection.name
