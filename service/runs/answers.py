"""What the use cases answer: run and step shapes, engine refusals as problems, paging.

Shared by every use case so a run, a step or a 422 reads the same whichever
endpoint produced it.
"""

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Row

from service import schedules
from service.problems import (
    InvalidRequest,
    NotFound,
)
from service.runs.statements import iso_timestamp, utc_now
from service.schedules.base import ScheduleEvent, Scheduler
from service.schedules.codec import encode_floats

# LRKEEPER_STALE_AFTER's default: ten minutes without a new step.
DEFAULT_STALE_AFTER_SECONDS = 600.0


def stale_cutoff(stale_after: float) -> datetime:
    """A running run whose last new step is older than this is shown as ``stale``."""
    return utc_now() - timedelta(seconds=stale_after)


def shown_status(status: str, stepped_at: datetime, stale_before: datetime) -> str:
    """The stored status, or ``stale``: computed when read, so no job has to mark runs."""
    if status == "running" and stepped_at < stale_before:
        return "stale"
    return status


def run_answer(row: Row[Any] | Mapping[str, Any], stale_before: datetime) -> dict[str, Any]:
    """A Run as API.md spells it; ``momentum`` only when the schedule cycles it."""
    values = row._mapping if isinstance(row, Row) else row
    answer: dict[str, Any] = {
        "run_id": values["run_id"],
        "status": shown_status(values["status"], values["stepped_at"], stale_before),
        "step": values["step"],
        "lr": values["lr"],
    }
    if values["momentum"] is not None:
        answer["momentum"] = values["momentum"]
    answer.update(
        scheduler=values["scheduler"],
        param_groups=values["param_groups"],
        state=values["state"],
        metadata=values["metadata"],
    )
    if values["ranks"] is not None:
        answer["ranks"] = values["ranks"]
    answer.update(
        created_at=iso_timestamp(values["created_at"]),
        updated_at=iso_timestamp(values["updated_at"]),
    )
    return answer


def step_answer(
    step: int,
    lr: Any,
    momentum: Any,
    replayed: bool,
    events: list[dict[str, Any]],
    stop: bool | None,
) -> dict[str, Any]:
    answer: dict[str, Any] = {"step": step, "lr": lr}
    if momentum is not None:
        answer["momentum"] = momentum
    answer["replayed"] = replayed
    answer["events"] = events
    if stop is not None:
        answer["stop"] = stop
    return answer


def event_dicts(events: Sequence[ScheduleEvent]) -> list[dict[str, Any]]:
    return [{"kind": event.kind, "detail": encode_floats(event.detail)} for event in events]


def invalid(loc: Sequence[str | int], message: str, **extensions: Any) -> InvalidRequest:
    """A 422 naming the field; ``extensions`` (a broken setting's ``limit``, ``max``) join it."""
    where = ".".join(str(part) for part in loc)
    return InvalidRequest(
        f"{where}: {message}", errors=[{"loc": list(loc), "msg": message}], **extensions
    )


def _invalid_config(error: schedules.InvalidConfig) -> InvalidRequest:
    return invalid(["body", *error.loc], error.message)


def build_scheduler(
    config: Mapping[str, Any], param_groups: list[dict[str, Any]]
) -> tuple[dict[str, Any], Scheduler]:
    """Validate and construct: the normalized config and the scheduler at step 0."""
    try:
        normalized = schedules.normalize_config(dict(config))
        scheduler = schedules.build(normalized, param_groups)
    except schedules.InvalidConfig as error:
        raise _invalid_config(error) from None
    return normalized, scheduler


def check_param_group_count(param_groups: Sequence[object], max_param_groups: int) -> None:
    if len(param_groups) > max_param_groups:
        raise invalid(
            ["body", "param_groups"],
            f"at most {max_param_groups} param groups are allowed, got {len(param_groups)}",
        )


def run_not_found(run_id: str) -> NotFound:
    return NotFound(f"no run {run_id!r}")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


# Cursors hold primary keys and steps: 64-bit at most, or the database would refuse them.
MAX_KEY = 2**63


def encode_cursor(*keys: int) -> str:
    text = ":".join(str(key) for key in keys)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int) -> tuple[int, ...]:
    """The keys in an opaque cursor; anything not made by :func:`encode_cursor` is a 422."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        keys = tuple(int(part) for part in text.split(":"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        keys = ()
    if len(keys) != parts or not all(0 <= key < MAX_KEY for key in keys):
        raise invalid(["query", "cursor"], "not a cursor this service handed out")
    return keys


DEFAULT_LIST_LIMIT = 100


DEFAULT_HISTORY_LIMIT = 1000


def page_limit(limit: int | None, default: int, maximum: int) -> int:
    """The page size asked for, or the default; out of range is a 422, never clamped."""
    if limit is None:
        return min(default, maximum)
    if not 1 <= limit <= maximum:
        raise invalid(["query", "limit"], f"must be between 1 and {maximum}, got {limit}")
    return limit
