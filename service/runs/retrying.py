"""Which failures are worth another attempt, and the one decorator that makes it."""

import functools
import inspect
import sqlite3
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import asyncpg
import sqlalchemy as sa
import tenacity

# serialization_failure, deadlock_detected; the server ending the session (admin_shutdown,
# crash_shutdown, cannot_connect_now), which asyncpg reports as an error of its own.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})


_ATTEMPTS = 5


def _is_transient(error: BaseException) -> bool:
    """Serialization failures, deadlocks, SQLite's busy timeout running out, and a pooled
    connection the server had dropped (db.py does not pre-ping; SQLAlchemy has discarded
    the pool's connections by now, so the next attempt gets a fresh one).

    sqlite3's own OperationalError arrives unwrapped from db.py's BEGIN IMMEDIATE hook.
    """
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        original: BaseException | None = error.orig
    else:
        original = error
    if getattr(original, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    if isinstance(original, ASYNCPG_CONNECTION_LOST):
        return True
    if isinstance(original, asyncpg.InvalidCachedStatementError):
        # A migration changed a table under this replica's prepared statements; asyncpg
        # has dropped them by now, so the next attempt prepares them afresh.
        return True
    return isinstance(original, sqlite3.OperationalError) and "locked" in str(original)


# A pooled asyncpg connection whose server side went away mid-use.
ASYNCPG_CONNECTION_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
    ConnectionResetError,
    BrokenPipeError,
)


P = ParamSpec("P")
R = TypeVar("R")


_retry_after_a_transient_failure = tenacity.retry(
    retry=tenacity.retry_if_exception(_is_transient),
    stop=tenacity.stop_after_attempt(_ATTEMPTS - 1),
    wait=tenacity.wait_random_exponential(multiplier=0.02, max=0.5),
    reraise=True,
)


def retry_on_conflict(unit_of_work: Callable[P, R]) -> Callable[P, R]:
    """Run ``unit_of_work``; after a transient failure, retry it (up to _ATTEMPTS in all).

    Every unit of work here has committed or changed nothing when it raises, so running
    it again is safe; a step whose commit landed just before the connection broke is
    answered on the next attempt as the replay it now is. The first attempt runs bare and
    only a transient failure hands the rest to tenacity: its per-call bookkeeping measured
    about 20 µs, which every request would pay for a conflict that almost never happens.
    The first retry follows at once (the conflicting writer has finished by the time the
    error arrives); later ones back off with jitter.
    """
    retried: Any = _retry_after_a_transient_failure(unit_of_work)
    if inspect.iscoroutinefunction(unit_of_work):

        @functools.wraps(unit_of_work)
        async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return await unit_of_work(*args, **kwargs)
            except Exception as error:
                if not _is_transient(error):
                    raise
            return await retried(*args, **kwargs)

        return run_async  # type: ignore[return-value]

    @functools.wraps(unit_of_work)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return unit_of_work(*args, **kwargs)
        except Exception as error:
            if not _is_transient(error):
                raise
        return retried(*args, **kwargs)  # type: ignore[no-any-return]

    return run
