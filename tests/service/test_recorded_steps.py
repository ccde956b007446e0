"""RecordedSteps: the per-process hint that picks the read or the write path for a step report.

The answers it can never change are proven through HTTP (test_steps_contract.py: a
rewind through another replica; test_concurrency.py: ranks spread over replicas).
"""

from service.runs.steps import RecordedSteps


def test_a_step_is_probably_recorded_only_up_to_the_highest_one_seen() -> None:
    hints = RecordedSteps()
    assert not hints.probably_recorded("run", 0)
    hints.saw("run", 5)
    hints.saw("run", 3)  # an older answer arriving late never lowers the hint
    assert hints.probably_recorded("run", 5)
    assert hints.probably_recorded("run", 1)
    assert not hints.probably_recorded("run", 6)
    assert not hints.probably_recorded("other", 1)


def test_the_hint_forgets_everything_instead_of_growing_past_its_capacity() -> None:
    hints = RecordedSteps(capacity=3)
    for run in ("a", "b", "c"):
        hints.saw(run, 1)
    hints.saw("d", 1)
    assert hints.probably_recorded("d", 1)
    assert not any(hints.probably_recorded(run, 1) for run in ("a", "b", "c"))
