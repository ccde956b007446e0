"""Which failures are worth another attempt, which mean the database is away, and the one
decorator that acts on both: retry the first kind, answer 503 for the second."""

import functools
import inspect
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import asyncpg
import sqlalchemy as sa
import tenacity

from service.problems import DatabaseUnavailable

# serialization_failure, deadlock_detected; the server ending the session (admin_shutdown,
# crash_shutdown, cannot_connect_now), which asyncpg reports as an error of its own.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})


_ATTEMPTS = 5
# Retries stop this long after the first failure. Every single wait on the database is
# bounded too (service.db.DATABASE_WAIT_SECONDS), so a request that meets a database
# that stays away is answered 503 within about 3 waits, never hung.
RETRY_WINDOW_SECONDS = 3.0

logger = logging.getLogger("lrkeeper.database")


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
    if isinstance(original, OSError | TimeoutError):
        # asyncpg could not connect (refused, timed out): a server restarting, or gone.
        return True
    return isinstance(original, sqlite3.OperationalError) and "locked" in str(original)


# A pooled asyncpg connection whose server side went away mid-use.
ASYNCPG_CONNECTION_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
    ConnectionResetError,
    BrokenPipeError,
)

# The server refusing work for want of capacity or while starting or stopping.
_ASYNCPG_UNAVAILABLE = (
    *ASYNCPG_CONNECTION_LOST,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
_UNAVAILABLE_DRIVER_ERRORS = (
    sqlite3.OperationalError,
    OSError,
    TimeoutError,
    *_ASYNCPG_UNAVAILABLE,
)


def _is_unavailable(error: BaseException) -> bool:
    """The database is unreachable, stopped, cut off, locked or full: a 503, not a bug.

    SQLAlchemy's OperationalError covers psycopg's connection failures and sqlite's
    locked, full, I/O and cannot-open errors; a pool with no free connection in time
    is its TimeoutError; asyncpg raises its own classes, OSError and TimeoutError.
    """
    if isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError):
        return True
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _UNAVAILABLE_DRIVER_ERRORS)


def _unavailable(error: Exception) -> DatabaseUnavailable:
    # What failed goes to the log; the answer does not name hosts, ports or files.
    logger.warning("database unavailable: %s: %s", type(error).__name__, error)
    return DatabaseUnavailable(
        "the database did not answer in time (unreachable, stopped, locked or full); "
        "retry after the number of seconds in Retry-After"
    )


P = ParamSpec("P")
R = TypeVar("R")


_retry_after_a_transient_failure = tenacity.retry(
    retry=tenacity.retry_if_exception(_is_transient),
    stop=tenacity.stop_after_attempt(_ATTEMPTS - 1)
    | tenacity.stop_after_delay(RETRY_WINDOW_SECONDS),
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
    error arrives); later ones back off with jitter. A failure that means the database is
    away (:func:`_is_unavailable`), once retries are spent, becomes DatabaseUnavailable:
    503 with Retry-After, so clients wait and come back instead of seeing a 500.
    """
    retried: Any = _retry_after_a_transient_failure(unit_of_work)
    if inspect.iscoroutinefunction(unit_of_work):

        @functools.wraps(unit_of_work)
        async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return await unit_of_work(*args, **kwargs)
            except Exception as error:
                if not _is_transient(error):
                    if _is_unavailable(error):
                        raise _unavailable(error) from error
                    raise
            try:
                return await retried(*args, **kwargs)
            except Exception as error:
                if _is_unavailable(error):
                    raise _unavailable(error) from error
                raise

        return run_async  # type: ignore[return-value]

    @functools.wraps(unit_of_work)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return unit_of_work(*args, **kwargs)
        except Exception as error:
            if not _is_transient(error):
                if _is_unavailable(error):
                    raise _unavailable(error) from error
                raise
        try:
            return retried(*args, **kwargs)  # type: ignore[no-any-return]
        except Exception as error:
            if _is_unavailable(error):
                raise _unavailable(error) from error
            raise

    return run
