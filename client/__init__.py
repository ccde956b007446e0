"""lrkeeper's client: ``RemoteLRScheduler``, a drop-in for torch's LR schedulers whose
state lives in an lrkeeper service, and ``LRKeeper``, the HTTP API as typed methods.

Needs httpx and tenacity only; torch is never imported (optimizers are anything
with ``param_groups``).
"""

from client.api import (
    Event,
    HistoryItem,
    LrAnswer,
    LRKeeper,
    LrSuggestion,
    Preview,
    RetryPolicy,
    Run,
    StepAnswer,
)
from client.errors import (
    CheckpointAheadOfRun,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    InternalError,
    InvalidConfig,
    InvalidRequest,
    LRKeeperError,
    NotEnoughData,
    NotFound,
    RunConflict,
    RunNotRunning,
    ScheduleEnded,
    ScheduleFailed,
    ServiceError,
    ServiceUnavailable,
    StepOutOfOrder,
    TooManyRequests,
    TransportError,
    Unauthorized,
)
from client.scheduler import RemoteLRScheduler

__all__ = [
    "CheckpointAheadOfRun",
    "Conflict",
    "DeadlineExceeded",
    "Event",
    "Forbidden",
    "HistoryItem",
    "InternalError",
    "InvalidConfig",
    "InvalidRequest",
    "LRKeeper",
    "LRKeeperError",
    "LrAnswer",
    "LrSuggestion",
    "NotEnoughData",
    "NotFound",
    "Preview",
    "RemoteLRScheduler",
    "RetryPolicy",
    "Run",
    "RunConflict",
    "RunNotRunning",
    "ScheduleEnded",
    "ScheduleFailed",
    "ServiceError",
    "ServiceUnavailable",
    "StepAnswer",
    "StepOutOfOrder",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
]
