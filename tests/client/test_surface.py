"""The client's public surface, and what importing it costs a training process."""

import json
import subprocess
import sys

import client
import client.errors

PUBLIC_NAMES = [
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
HEAVY_PACKAGES = ["torch", "fastapi", "starlette", "sqlalchemy", "pydantic", "uvicorn", "alembic"]


def test_public_names_are_pinned() -> None:
    assert sorted(client.__all__) == PUBLIC_NAMES
    assert all(hasattr(client, name) for name in PUBLIC_NAMES)


def test_every_exception_class_is_drawn_in_the_errors_docstring() -> None:
    docstring = client.errors.__doc__ or ""
    exceptions = [
        name
        for name, value in vars(client.errors).items()
        if isinstance(value, type) and issubclass(value, client.errors.LRKeeperError)
    ]
    assert len(exceptions) >= 18
    assert [name for name in exceptions if name not in docstring] == []


def test_import_needs_neither_torch_nor_the_server_extra() -> None:
    # Each heavy package is made unimportable in a fresh interpreter (a None entry in
    # sys.modules makes `import x` fail), so importing and using the client proves it
    # does without them.
    program = f"""
import json, sys
for name in {HEAVY_PACKAGES!r}:
    sys.modules[name] = None
import client
client.LRKeeper("http://127.0.0.1:1").close()
loaded = sorted(n for n in sys.modules if sys.modules[n] is not None
                and n.split(".")[0] in {HEAVY_PACKAGES!r} + ["service"])
print(json.dumps(loaded))
"""
    finished = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(finished.stdout) == []


def test_plain_import_loads_no_heavy_package() -> None:
    program = (
        "import json, sys, client; "
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    finished = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    top_level_modules = set(json.loads(finished.stdout))
    assert top_level_modules.isdisjoint([*HEAVY_PACKAGES, "service"])
    assert {"httpx", "tenacity", "client"} <= top_level_modules
