"""The request and response bodies of API.md, as pydantic models.

Request models validate what arrives (every refusal names its field); the
engine validates the scheduler config itself, so ``SchedulerConfig`` only
checks the shape. Response models document the answers in ``/openapi.json``:
the hot routes build their answers as plain dicts in ``service.runs`` and send
them as they are, so these never cost a validation pass there.

Non-finite floats travel as the strings ``"NaN"``, ``"Infinity"``,
``"-Infinity"``; requests may also carry the bare tokens Python's ``json`` writes.
"""

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
)

from service.limits import (
    check_json_text,
    check_metadata,
    check_metrics,
    check_param_groups,
    check_text,
)
from service.schedules.codec import decode_float

RUN_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
# A prefix of a run id holds nothing a run id cannot (U+0000 in it was a 500 on PostgreSQL).
RUN_ID_PREFIX_PATTERN = r"^[A-Za-z0-9._-]{0,128}$"
# Steps are stored as 32-bit integers; anything larger is out of range, not clamped.
MAX_STEP = 2**31 - 1
NON_FINITE_STRINGS = ("NaN", "Infinity", "-Infinity")

# What a run's status is set to; ``stale`` is only ever computed when read (see
# service.runs.answers), never stored.
StoredRunStatus = Literal["running", "finished", "failed"]
RunStatus = Literal["running", "stale", "finished", "failed"]
# A run in one of these takes no new steps until it is reopened.
STOPPED_STATUSES = frozenset({"finished", "failed"})

_NUMBER_OR_NON_FINITE_SCHEMA = {
    "anyOf": [{"type": "number"}, {"type": "string", "enum": list(NON_FINITE_STRINGS)}]
}


def _metric_value(value: object) -> float:
    """A number, or one of the three non-finite spellings; never null, a bool or other text."""
    if isinstance(value, bool) or value is None:
        raise ValueError("a metric must be a number (or 'NaN', 'Infinity', '-Infinity')")
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise ValueError("the number is too large for a float") from None
    if isinstance(value, str) and value in NON_FINITE_STRINGS:
        return float(decode_float(value))
    raise ValueError("a metric must be a number (or 'NaN', 'Infinity', '-Infinity')")


def _finite_lr(value: object) -> float:
    """An lr a person may set by hand: a finite number, not negative (torch's optimizers agree)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("an lr must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("the number is too large for a float") from None
    if not math.isfinite(number):
        raise ValueError("an lr must be finite")
    if number < 0:
        raise ValueError("an lr must not be negative")
    return number


MetricValue = Annotated[
    float, PlainValidator(_metric_value), WithJsonSchema(_NUMBER_OR_NON_FINITE_SCHEMA)
]
LearningRate = Annotated[float, PlainValidator(_finite_lr), WithJsonSchema({"type": "number"})]


def _decimal_digits(value: object) -> object:
    """A query integer spelled as the document says one is: digits, not ``+0.0`` or ``1e3``.

    pydantic's lax mode reads ``"+0.0"`` as 0; a client generated from the document
    never sends that, and a fuzzer checks that the server refuses what the schema does.
    """
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("expected an integer written in decimal digits")
    return value


def _true_or_false(value: object) -> object:
    """A query boolean is ``true`` or ``false``, as JSON spells them (not ``on``, ``1``, ``y``)."""
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("expected true or false")
    return value


QueryInteger = Annotated[int, BeforeValidator(_decimal_digits)]
QueryBoolean = Annotated[bool, BeforeValidator(_true_or_false)]

# The service writes timestamps as ISO 8601 with an offset (RFC 3339); a generated client
# parses them into datetimes when the document says so.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
# A float in an answer: a JSON number, or a non-finite one spelled as a string.
FloatValue = float | Literal["NaN", "Infinity", "-Infinity"]


class _RequestBody(BaseModel):
    """Unknown fields are refused (422 naming them): a typo must not pass silently."""

    model_config = ConfigDict(extra="forbid")


def _refuse_null(value: object) -> object:
    if value is None:
        raise ValueError("may be omitted, but not null")
    return value


# -- requests ------------------------------------------------------------------


class SchedulerConfig(BaseModel):
    """``{"type", "params", "monitor"?}``; the engine checks the rest and names the field."""

    # Extra keys are kept so the engine, which knows every type's shape, reports them.
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"example": {"type": "CosineAnnealingLR", "params": {"T_max": 100}}},
    )

    type: str = Field(description="The PyTorch class name, e.g. CosineAnnealingLR, or LRRangeTest")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The class's keyword arguments, by PyTorch's names"
    )
    monitor: str | None = Field(
        default=None,
        description="The metric a metric-driven type reads (ReduceLROnPlateau, LRRangeTest)",
    )

    _storable_text = field_validator("type", "monitor", mode="before")(check_text)
    _storable_params = field_validator("params", mode="before")(check_json_text)

    def as_config(self) -> dict[str, Any]:
        """The config as the client spelled it: only the keys it sent."""
        return self.model_dump(exclude_unset=True)


ParamGroup = dict[str, Any]

# How the ranks' metrics of one step become the one value the schedule reads
# (service.runs.ranks says exactly how each is computed).
Reduction = Literal["mean", "min", "max", "sum"]
MAX_WORLD_SIZE = 16384
DEFAULT_RANKS_TIMEOUT_SECONDS = 300.0


class Ranks(_RequestBody):
    """Every rank of a job reports each metric-driven step; the step waits for all of them."""

    world_size: int = Field(strict=True, ge=1, le=MAX_WORLD_SIZE, description="How many ranks")
    reduce: Reduction = Field(
        default="mean", description="How the ranks' metrics become the one the schedule reads"
    )
    timeout_s: float = Field(
        default=DEFAULT_RANKS_TIMEOUT_SECONDS,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="Seconds after a step's first report when the ranks present decide it",
    )


class RunCreate(_RequestBody):
    scheduler: SchedulerConfig
    param_groups: list[ParamGroup] = Field(
        min_length=1,
        description="The optimizer's param groups when the scheduler is created, in order",
        json_schema_extra={"example": [{"lr": 0.1, "momentum": 0.9}]},
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Free-form; ignored on a PUT of an existing run"
    )
    # Null is refused (_refuse_null): service.request_schemas offers the object only.
    ranks: Ranks | None = Field(
        default=None,
        description="Metric-driven steps wait for every rank's metric (and reduce them)",
    )

    _no_null_ranks = field_validator("ranks", mode="before")(_refuse_null)

    # service.limits: bounds checked before the items are validated one by one.
    _bounded_groups = field_validator("param_groups", mode="before")(check_param_groups)
    _bounded_metadata = field_validator("metadata", mode="before")(check_metadata)


class RunPatch(_RequestBody):
    # Null is refused (_refuse_null), so the document does not offer it.
    status: Annotated[
        StoredRunStatus | None,
        WithJsonSchema({"type": "string", "enum": ["running", "finished", "failed"]}),
    ] = Field(default=None, description='"running" reopens a finished or failed run')
    metadata: Annotated[dict[str, Any] | None, WithJsonSchema({"type": "object"})] = Field(
        default=None, description="Replaces the stored metadata as a whole"
    )

    _no_null = field_validator("status", "metadata", mode="before")(_refuse_null)
    _bounded_metadata = field_validator("metadata", mode="before")(check_metadata)


class StepReport(_RequestBody):
    step: int = Field(strict=True, ge=1, le=MAX_STEP)
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    worker: str | None = Field(default=None, max_length=256)
    rank: Annotated[
        int | None,
        WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_WORLD_SIZE - 1}),
    ] = Field(
        default=None,
        strict=True,
        ge=0,
        lt=MAX_WORLD_SIZE,
        description="The reporting rank (0 ≤ rank < world_size) on a run with `ranks`",
    )

    _no_null_rank = field_validator("rank", mode="before")(_refuse_null)

    _bounded_metrics = field_validator("metrics", mode="before")(check_metrics)
    _storable_worker = field_validator("worker", mode="before")(check_text)


class LrChange(_RequestBody):
    lr: list[LearningRate] = Field(min_length=1, description="One value per param group")
    reason: str | None = Field(default=None, max_length=1000)

    _storable_reason = field_validator("reason", mode="before")(check_text)


class Rewind(_RequestBody):
    step: int = Field(strict=True, ge=0, le=MAX_STEP)


class PreviewRequest(_RequestBody):
    scheduler: SchedulerConfig
    param_groups: list[ParamGroup] = Field(min_length=1)
    steps: int = Field(strict=True, ge=0, description="How many steps after step 0")
    metrics: list[MetricValue] | None = Field(
        default=None, description="For metric-driven types: metrics[i] is reported with step i+1"
    )

    _bounded_groups = field_validator("param_groups", mode="before")(check_param_groups)


# -- answers -------------------------------------------------------------------


class RanksWaiting(BaseModel):
    step: int = Field(description="the run's next step, which waits for every rank")
    reported: list[int] = Field(description="the ranks whose metric for it has arrived")
    missing: list[int]
    since: Timestamp = Field(description="when its first report arrived")
    decided_by: Timestamp = Field(description="when the ranks present decide it (timeout_s)")


class Run(BaseModel):
    run_id: str
    status: RunStatus
    step: int
    lr: list[FloatValue]
    momentum: list[FloatValue] | None = Field(
        default=None, description="Present only when the schedule cycles momentum"
    )
    scheduler: dict[str, Any] = Field(description="The config with every default filled in")
    param_groups: list[ParamGroup]
    state: dict[str, Any] = Field(description="The scheduler's internals after the current step")
    metadata: dict[str, Any]
    ranks: Ranks | None = Field(
        default=None, description="Present only when the run's steps wait for every rank"
    )
    waiting: RanksWaiting | None = Field(
        default=None,
        description="GET of one run only: its next step has some ranks' reports, not all",
    )
    created_at: Timestamp
    updated_at: Timestamp


class RunPage(BaseModel):
    items: list[Run]
    next_cursor: str | None


class StepEvent(BaseModel):
    kind: str
    detail: dict[str, Any]


class StepAnswer(BaseModel):
    step: int
    lr: list[FloatValue]
    momentum: list[FloatValue] | None = Field(
        default=None, description="Present only when the schedule cycles momentum"
    )
    replayed: bool
    events: list[StepEvent]
    stop: bool | None = Field(default=None, description="LRRangeTest runs only")


class StepPending(BaseModel):
    """A metric-driven step still waiting for some ranks' reports (HTTP 202)."""

    pending: Literal[True]
    step: int
    reported: int = Field(description="ranks whose metric for `step` has arrived")
    world_size: int


class LrAnswer(BaseModel):
    step: int
    lr: list[FloatValue]
    momentum: list[FloatValue] | None = None


class HistoryItem(BaseModel):
    step: int
    lr: list[FloatValue]
    momentum: list[FloatValue] | None = None
    metrics: dict[str, FloatValue]
    worker: str | None
    recorded_at: Timestamp
    superseded: bool


class HistoryThinning(BaseModel):
    points: int = Field(description="the points asked for")
    bucket_steps: int = Field(description="steps per bucket whose extremes were kept")


class HistoryPage(BaseModel):
    items: list[HistoryItem]
    next_cursor: str | None
    thinned: HistoryThinning | None = Field(
        default=None, description="Present only on a thinned answer (query `points`)"
    )


class EventItem(BaseModel):
    step: int
    kind: str
    detail: dict[str, Any]
    recorded_at: Timestamp


class EventPage(BaseModel):
    items: list[EventItem]
    next_cursor: str | None


class PreviewAnswer(BaseModel):
    lr: list[list[FloatValue]] = Field(description="lr[k] holds the groups' lrs after step k")
    momentum: list[list[FloatValue]] | None = None


class SchedulerTypes(BaseModel):
    items: list[dict[str, Any]]


# How an LR range test's suggestion is read off its curve (service.schedules.range_test).
SuggestionMethod = Literal["steepest", "minimum", "valley"]


class LrSuggestions(BaseModel):
    steepest: float = Field(description="where the smoothed loss falls fastest")
    minimum: float = Field(description="the lr at the smallest smoothed loss, divided by 10")
    valley: float = Field(description="fastai's valley: about halfway down the longest fall")


class LrSuggestion(BaseModel):
    lr: FloatValue = Field(description="the suggestion of `method`")
    min_loss_lr: FloatValue = Field(description="the `minimum` suggestion")
    base_lr: FloatValue = Field(description="CyclicLR's base_lr: where the loss starts falling")
    max_lr: FloatValue = Field(description="CyclicLR's max_lr: where it stops falling")
    method: SuggestionMethod = Field(description="the method `lr` was read with")
    suggestions: LrSuggestions = Field(description="every method's suggestion, by name")
    curve: list[list[FloatValue]] = Field(description="`[[lr, smoothed_loss], ...]`, step by step")
