"""The use cases: the only package that begins transactions, locks rows and commits.

Each public function is one unit of work that has committed (or changed
nothing) before it returns, so a 200 built from its result is durable.

- Writes: ``with database.write_lock, database.engine.begin()``; the run's row
  is locked with ``SELECT ... FOR UPDATE`` (PostgreSQL; on SQLite the
  transaction's ``BEGIN IMMEDIATE`` already holds the database's write lock and
  no ``FOR UPDATE`` is written) before anything that depends on it is
  computed. Serialization failures, deadlocks and dropped connections are
  retried by :func:`service.runs.retrying.retry_on_conflict`; nothing else is.
- Reads: ``database.read_engine``, in autocommit (see service.db). A step that
  is already recorded (every rank but the first reports each step) is answered
  from the read path, so replays never queue behind writers: a replay is one
  statement, and a new step (per :class:`service.runs.steps.RecordedSteps`, the run has not reached
  it) goes straight to the lock-insert-update-commit.
- The engine never sees the database: a run is restored from its stored state,
  stepped, and its new state written back. Every stored JSON value is
  codec-encoded (non-finite floats as strings).

The hot path (service.runs.steps) is written once: a read is one named
statement (service.runs.statements.HotStatement), a step report's write one
generator (lock, look again, advance, write) driven on sqlite3's cursor in a
worker thread or on asyncpg's connection on the event loop (PostgreSQL), with
the same transaction and lock discipline. Everything else uses SQLAlchemy Core,
in FastAPI's thread pool.

A database that does not answer in time (down, cut off, locked, full) is, once
the retries are spent, a DatabaseUnavailable: 503 with Retry-After, never a 500.
"""
