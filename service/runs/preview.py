"""What needs no database: previewing a schedule, listing the scheduler types."""

from dataclasses import dataclass
from typing import Any

from service import schedules
from service.runs.answers import build_scheduler, check_param_group_count, invalid
from service.schedules.codec import encode_floats
from service.schemas import PreviewRequest


@dataclass(frozen=True)
class PreviewedSchedule:
    """Row k of ``lrs`` (and ``momenta``) holds the groups' values after step k; ``events``
    the ``(step, kind)`` of each event the schedule produced (charts mark them); ``config``
    the scheduler config with its defaults filled in (a default ``monitor`` included)."""

    config: dict[str, Any]
    lrs: list[list[float]]
    momenta: list[list[float]] | None
    events: list[tuple[int, str]]


def preview(
    request: PreviewRequest,
    *,
    max_preview_steps: int,
    max_preview_values: int,
    max_param_groups: int,
) -> dict[str, Any]:
    """Run a schedule for ``steps`` steps without storing anything."""
    schedule = preview_schedule(
        request,
        max_preview_steps=max_preview_steps,
        max_preview_values=max_preview_values,
        max_param_groups=max_param_groups,
    )
    answer: dict[str, Any] = {"lr": encode_floats(schedule.lrs)}
    if schedule.momenta is not None:
        answer["momentum"] = encode_floats(schedule.momenta)
    return answer


def preview_schedule(
    request: PreviewRequest,
    *,
    max_preview_steps: int,
    max_preview_values: int,
    max_param_groups: int,
) -> PreviewedSchedule:
    """The schedule's values at steps 0 to ``steps``, within the preview's limits (a 422
    naming ``steps`` beyond them), and the events along the way."""
    if request.steps > max_preview_steps:
        raise invalid(
            ["body", "steps"],
            f"at most {max_preview_steps} steps, got {request.steps}",
            limit="max_preview_steps",
            max=max_preview_steps,
        )
    check_param_group_count(request.param_groups, max_param_groups)
    groups = len(request.param_groups)
    if (request.steps + 1) * groups > max_preview_values:
        raise invalid(
            ["body", "steps"],
            f"with {groups} param groups at most {max_preview_values // groups - 1} steps "
            f"(LRKEEPER_MAX_PREVIEW_VALUES = {max_preview_values} lr values), "
            f"got {request.steps}",
            limit="max_preview_values",
            max=max_preview_values,
        )
    config, scheduler = build_scheduler(request.scheduler.as_config(), request.param_groups)
    metrics = request.metrics or []
    first = scheduler.outcome()
    lrs = [first.lr]
    momenta = [first.momentum]
    events = [(0, event.kind) for event in first.events]
    for step in range(1, request.steps + 1):
        metric = metrics[step - 1] if step <= len(metrics) else None
        try:
            outcome = scheduler.step(metric)
        except schedules.MissingMetric as error:
            raise invalid(
                ["body", "metrics"],
                f"step {step} needs a metric ({error.name!r}): give metrics[{step - 1}]",
            ) from None
        except schedules.StepPastEnd as error:
            raise invalid(["body", "steps"], f"step {step} fails: {error}") from None
        except schedules.InvalidStepValue as error:  # its message names the step
            raise invalid(["body", "steps"], str(error)) from None
        lrs.append(outcome.lr)
        momenta.append(outcome.momentum)
        events.extend((step, event.kind) for event in outcome.events)
    return PreviewedSchedule(
        config=config,
        lrs=lrs,
        momenta=None if first.momentum is None else momenta,  # type: ignore[arg-type]
        events=events,
    )


def scheduler_types() -> dict[str, Any]:
    return {"items": encode_floats(schedules.scheduler_types())}
