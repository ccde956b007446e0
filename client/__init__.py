"""lrkeeper's client: ``RemoteLRScheduler``, a drop-in for torch's LR schedulers whose
state lives in an lrkeeper service, and ``LRKeeper``, the HTTP API as typed methods.

Needs httpx and tenacity only; torch is never imported (optimizers are anything
with ``param_groups``). ``RemoteLRScheduler.step()`` is pipelined by default: it
returns a ``PendingStep`` at once and the answer reaches the optimizer before its
next step (client/scheduler.py).
"""

from client.api import (
    Event,
    HistoryItem,
    LrAnswer,
    LRKeeper,
    LrSuggestion,
    Preview,
    Ranks,
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
    InvalidJson,
    InvalidRequest,
    LRKeeperError,
    NotEnoughData,
    NotFound,
    PayloadTooLarge,
    RankMetricConflict,
    RanksUndecided,
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
    UnsupportedMediaType,
)
from client.pipeline import PendingStep
from client.range_finder import LrFinding, find_lr
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
    "InvalidJson",
    "InvalidRequest",
    "LRKeeper",
    "LRKeeperError",
    "LrAnswer",
    "LrFinding",
    "LrSuggestion",
    "NotEnoughData",
    "NotFound",
    "PayloadTooLarge",
    "PendingStep",
    "Preview",
    "RankMetricConflict",
    "Ranks",
    "RanksUndecided",
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
    "UnsupportedMediaType",
    "find_lr",
]
