"""Engines, transaction discipline and schema migration for SQLite and PostgreSQL.

Only ``service.runs`` opens transactions; this module decides what a transaction
*is* on each backend:

- SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (SQLAlchemy's
  documented pysqlite recipe: the driver's own BEGIN handling is switched off and
  an event hook emits ours), so a writer takes the database's write lock before it
  reads the row it is about to change — the SQLite equivalent of ``SELECT ... FOR
  UPDATE``. WAL lets readers run beside the one writer, ``synchronous=FULL`` makes
  every commit durable before the 200 leaves, ``busy_timeout`` makes writers from
  other processes queue instead of failing, and an in-process lock makes this
  process's writer threads queue without spinning on that timeout at all.
- PostgreSQL: psycopg 3 at READ COMMITTED; ``service.runs`` locks rows itself.
  The hot path (step reports, lr reads) runs on an asyncpg pool instead, at the
  server's default READ COMMITTED too (:func:`with_hot_path_pool`).

Reads run in autocommit on both backends: every read in ``service.runs`` is one
statement, or several whose earlier ones fetch only what never changes (a run's
key, its schedule), so a statement's own snapshot is all the consistency they
need, and a read costs no BEGIN and no ROLLBACK.

Pools hold ``pool_size`` connections and never open more (no overflow that would
be closed on return and reopened on the next burst); the app caps its request
thread pool at the same number (service.main), so a request never waits for a
connection either. There is no pre-ping: a connection the server dropped fails
its statement, SQLAlchemy then discards the pool's connections (service.runs does
the same for asyncpg's), and ``service.runs`` retries the unit of work on a fresh one.
"""

import contextlib
import dataclasses
import functools
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncpg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

# The longest one wait on the database may take: connecting, a free pooled connection,
# SQLite's write lock (ours and the file's), a PostgreSQL statement on the hot path.
# service.runs.retrying retries within a window of about the same length and then
# answers 503, so a request meeting a database that is away is answered within ~10 s.
DATABASE_WAIT_SECONDS = 3.0
SQLITE_BUSY_TIMEOUT_MS = int(DATABASE_WAIT_SECONDS * 1000)
DEFAULT_POOL_SIZE = 16
# Below any server- or proxy-side idle timeout one is likely to meet.
POOL_RECYCLE_SECONDS = 1800
# Any fixed 64-bit number works; advisory locks are per database, so this only
# serialises lrkeeper replicas migrating the same database.
MIGRATION_ADVISORY_LOCK_KEY = 0x6C726B6565706572  # "lrkeeper" in ASCII

Dialect = Literal["sqlite", "postgresql"]


class LoopReader:
    """SQLite: one connection for point reads made on the event loop itself, no thread hop.

    An indexed read of a WAL database is ~10 µs and never waits for a writer, while
    handing it to a worker thread and back costs several times that: lr reads and
    replays (the other ranks' reports of a step) are answered here. The connection is
    read-only and its busy timeout is 0, so the loop never blocks on a lock; in the
    rare case WAL recovery makes it busy, service.runs takes the thread-pool path.
    Opened on first use; only the loop's thread uses it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def fetch_one(self, statement: str, values: Mapping[str, Any]) -> sqlite3.Row | None:
        """The first row of ``statement``, by name; sqlite3.OperationalError when busy."""
        if self._connection is None:
            connection = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA query_only=ON")
            connection.row_factory = sqlite3.Row
            self._connection = connection
        row: sqlite3.Row | None = self._connection.execute(statement, values).fetchone()
        return row

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass(frozen=True)
class Database:
    """The engines one service process uses, and how its writers take turns.

    ``hot_path_pool`` is PostgreSQL's asyncpg pool for step reports and lr reads
    (service.runs), added by :func:`with_hot_path_pool` inside a running event loop.
    """

    engine: Engine
    read_engine: Engine
    write_lock: AbstractContextManager[Any]
    dialect: Dialect
    hot_path_pool: asyncpg.Pool | None = None
    loop_reader: LoopReader | None = None

    def dispose(self) -> None:
        if self.loop_reader is not None:
            self.loop_reader.close()
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()

    async def close(self) -> None:
        if self.hot_path_pool is not None:
            await self.hot_path_pool.close()
        self.dispose()


def normalize_url(url: str) -> str:
    """Point plain ``postgresql://`` (and Heroku-style ``postgres://``) URLs at psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def dialect_of(url: str) -> Dialect:
    backend = make_url(normalize_url(url)).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return "sqlite" if backend == "sqlite" else "postgresql"


def sqlite_file_path(url: str) -> str | None:
    """The path of the SQLite file ``url`` names; None for anything else (in-memory, URIs)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def ensure_sqlite_directory(url: str) -> None:
    """Create the directory of a SQLite file so a fresh checkout or volume just works."""
    path = sqlite_file_path(url)
    if path is not None:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_sqlite_engine(
    url: str, *, begin: str | None, enforce_foreign_keys: bool = True, **options: Any
) -> Engine:
    """A SQLite engine whose transactions start with ``begin`` ("BEGIN" or "BEGIN IMMEDIATE").

    ``begin=None`` leaves the connections in autocommit: each statement is its own
    transaction (the read engine). Migrations switch foreign keys off: Alembic's
    batch mode rebuilds a table by copying it, which a referencing table's foreign
    keys would otherwise refuse.
    """
    ensure_sqlite_directory(url)
    engine = sa.create_engine(url, **options)
    foreign_keys = "ON" if enforce_foreign_keys else "OFF"

    @sa.event.listens_for(engine, "connect")
    def configure_connection(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 driver (it would defer it past SELECTs);
        # the "begin" hook below emits ours. Pragmas must run outside a transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA foreign_keys={foreign_keys}")
        finally:
            cursor.close()

    if begin is not None:

        @sa.event.listens_for(engine, "begin")
        def emit_begin(connection: Connection) -> None:
            # Straight to the driver: this runs once per transaction on the hot path,
            # and SQLAlchemy's statement machinery would add nothing to a bare BEGIN.
            # A busy timeout here raises sqlite3's own OperationalError, which
            # service.runs retries like the wrapped one.
            connection.connection.driver_connection.execute(begin)  # type: ignore[union-attr]

    return engine


def create_postgresql_engine(url: str, **options: Any) -> Engine:
    options.setdefault("isolation_level", "READ COMMITTED")
    # libpq's connect_timeout takes whole seconds.
    options.setdefault("connect_args", {"connect_timeout": max(1, round(DATABASE_WAIT_SECONDS))})
    return sa.create_engine(url, **options)


def _pool_options(pool_size: int) -> dict[str, Any]:
    return {
        "pool_size": pool_size,
        "max_overflow": 0,
        "pool_recycle": POOL_RECYCLE_SECONDS,
        "pool_timeout": DATABASE_WAIT_SECONDS,
    }


class WriteTurn:
    """This process's SQLite writers take turns; a turn not had in time is a busy database.

    Raises sqlite3's own "database is locked" error when the wait runs out, the error
    SQLite gives when its busy timeout runs out, so service.runs treats both alike.
    """

    def __init__(self, timeout: float = DATABASE_WAIT_SECONDS) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError("database is locked (this process's writers queue)")

    def __exit__(self, *_exc: object) -> None:
        self._lock.release()


def open_database(url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Database:
    """Open the engines for ``url``; nothing is migrated here (see :func:`upgrade_to_head`).

    ``pool_size`` bounds each engine's connections; writers on SQLite queue on the
    write lock first, so its write engine only ever uses one of them.
    """
    url = normalize_url(url)
    pool = _pool_options(pool_size)
    if dialect_of(url) == "sqlite":
        path = sqlite_file_path(url)
        return Database(
            engine=create_sqlite_engine(url, begin="BEGIN IMMEDIATE", **pool),
            read_engine=create_sqlite_engine(url, begin=None, **pool),
            write_lock=WriteTurn(),
            dialect="sqlite",
            loop_reader=LoopReader(path) if path is not None else None,
        )
    return Database(
        engine=create_postgresql_engine(url, **pool),
        read_engine=create_postgresql_engine(url, isolation_level="AUTOCOMMIT", **pool),
        write_lock=contextlib.nullcontext(),
        dialect="postgresql",
    )


async def with_hot_path_pool(database: Database, *, pool_size: int) -> Database:
    """``database`` plus, on PostgreSQL, the asyncpg pool the hot path runs on.

    Step reports and lr reads are most of the traffic. On the event loop with asyncpg
    they skip the thread-pool hop and psycopg's per-statement Python work: a bare
    endpoint measured 1.5-2.5x a bare sync psycopg one at concurrency 8 and 64
    (bench/results.md, ``--async-baseline``). SQLite has no asynchronous driver, so
    there the hot path stays on the thread pool. ``min_size=0``: nothing connects
    until a request needs it, so the service starts while the database is down.
    """
    if database.dialect != "postgresql":
        return database
    dsn = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=pool_size,
        max_inactive_connection_lifetime=POOL_RECYCLE_SECONDS,
        timeout=DATABASE_WAIT_SECONDS,  # connecting
        command_timeout=DATABASE_WAIT_SECONDS,  # each statement, a row lock's wait included
    )
    return dataclasses.replace(database, hot_path_pool=pool)


def find_alembic_pyproject() -> Path:
    """The pyproject.toml whose ``[tool.alembic]`` points at our migrations.

    A source checkout (editable install, tests) has it beside the ``service``
    package; an installed copy (the Docker image) runs from a directory holding
    pyproject.toml and migrations/.
    """
    candidates = [
        Path(__file__).resolve().parents[1] / "pyproject.toml",
        Path.cwd() / "pyproject.toml",
    ]
    for candidate in candidates:
        if (candidate.parent / "migrations" / "env.py").is_file() and candidate.is_file():
            return candidate
    searched = ", ".join(str(candidate) for candidate in candidates)
    raise RuntimeError(f"cannot find pyproject.toml next to migrations/ (looked at {searched})")


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic's configuration from pyproject.toml; ``database_url`` reaches migrations/env.py."""
    config = Config(toml_file=find_alembic_pyproject())
    if database_url is not None:
        config.attributes["database_url"] = normalize_url(database_url)
    return config


@functools.cache
def head_revisions() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def schema_is_current(engine: Engine) -> bool:
    """Whether the database behind ``engine`` is at the newest migration."""
    with engine.connect() as connection:
        applied = MigrationContext.configure(connection).get_current_heads()
    return frozenset(applied) == head_revisions()


@contextlib.contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock so replicas starting together migrate one at a time.

    The lock lives on its own autocommit connection: it outlasts the migration's
    transactions, and a crashed holder's lock dies with its connection.
    """
    if dialect_of(url) != "postgresql":
        yield
        return
    engine = create_postgresql_engine(url, poolclass=NullPool)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            lock_key = {"key": MIGRATION_ADVISORY_LOCK_KEY}
            connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), lock_key)
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), lock_key)
    finally:
        engine.dispose()


def upgrade_to_head(url: str) -> None:
    """Bring the database at ``url`` to the newest migration (a no-op when it is there)."""
    url = normalize_url(url)
    ensure_sqlite_directory(url)
    with _migration_lock(url):
        command.upgrade(alembic_config(url), "head")
