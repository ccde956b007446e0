"""The engine against live torch 2.13.0 on configs hypothesis draws, step by step.

The case space is the golden generator's (``make_golden.draw_case``: every type,
composites and their nesting, 1–4 SGD / Adam / momentum-less groups, metric sequences
with plateaus and NaN / ±inf, hand edits of the lr, restores from JSON state); here
hypothesis makes the choices, so every run explores new corners and a failure
shrinks to a small config. Where torch itself refuses or crashes, the engine must
refuse at creation or fail at that very step (after agreeing on all before it).

``LRKEEPER_PARITY_EXAMPLES`` sets the examples per type (default 150).
Needs torch: without it the module is skipped, visibly (.ci/run fails on that skip).
"""

import os
import random
from collections.abc import Sequence
from typing import TypeVar

import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from service.schedules import InvalidConfig, build  # noqa: E402
from tests.schedules.make_golden import FAMILIES, Case, draw_case, fill_from_torch  # noqa: E402
from tests.schedules.test_parity_golden import (  # noqa: E402
    describe_case,
    first_difference,
    replay_on_engine,
)

pytestmark = pytest.mark.torch

T = TypeVar("T")
# ~20 s in all on an idle core when the engine agrees; raise it to hunt for rare mismatches.
EXAMPLES_PER_TYPE = int(os.environ.get("LRKEEPER_PARITY_EXAMPLES", "150"))
MAX_STEPS = 300


class HypothesisChooser:
    """make_golden's Chooser backed by ``st.data()``: flags shrink toward False (the plain path)."""

    def __init__(self, data: st.DataObject) -> None:
        self._data = data

    def integer(self, low: int, high: int) -> int:
        return self._data.draw(st.integers(low, high))

    def real(self, low: float, high: float) -> float:
        return self._data.draw(st.floats(low, high, allow_nan=False, allow_infinity=False))

    def choice(self, options: Sequence[T]) -> T:
        return self._data.draw(st.sampled_from(options))

    def flag(self, probability: float) -> bool:
        return self._data.draw(st.integers(0, 999)) >= round(1000 * (1.0 - probability))

    def bulk_rng(self) -> random.Random:
        return random.Random(self._data.draw(st.integers(0, 2**32 - 1)))


def assert_engine_agrees_with_torch(case: Case) -> None:
    fill_from_torch(case)
    refused_at_creation = case.torch_error is not None and case.torch_error["step"] == 0
    if refused_at_creation:
        with pytest.raises(InvalidConfig):
            build(case.scheduler, case.param_groups)
        return
    try:
        run = replay_on_engine(case)
    except InvalidConfig as refusal:
        assert case.torch_error is not None, (
            f"engine refused a config torch runs: {refusal}\n{describe_case(case)}"
        )
        return  # torch crashes later on it: refusing at creation is what API.md asks
    difference = first_difference(case, run)
    assert difference is None, f"{difference}\n{describe_case(case)}"


@pytest.mark.parametrize("family", FAMILIES)
@settings(
    max_examples=EXAMPLES_PER_TYPE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_engine_matches_live_torch_on_drawn_configs(family: str, data: st.DataObject) -> None:
    chooser = HypothesisChooser(data)
    steps = chooser.integer(1, MAX_STEPS)
    case = draw_case(chooser, family, f"{family}/live", steps)
    assert_engine_agrees_with_torch(case)
