"""What needs no database: previewing a schedule, listing the scheduler types."""

from typing import Any

from service import schedules
from service.runs.answers import build_scheduler, check_param_group_count, invalid
from service.schedules.codec import encode_floats
from service.schemas import PreviewRequest


def preview(
    request: PreviewRequest,
    *,
    max_preview_steps: int,
    max_preview_values: int,
    max_param_groups: int,
) -> dict[str, Any]:
    """Run a schedule for ``steps`` steps without storing anything."""
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
    _, scheduler = build_scheduler(request.scheduler.as_config(), request.param_groups)
    metrics = request.metrics or []
    first = scheduler.outcome()
    lrs = [first.lr]
    momenta = [first.momentum]
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
    answer: dict[str, Any] = {"lr": encode_floats(lrs)}
    if first.momentum is not None:
        answer["momentum"] = encode_floats(momenta)
    return answer


def scheduler_types() -> dict[str, Any]:
    return {"items": encode_floats(schedules.scheduler_types())}
