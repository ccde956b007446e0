"""What a transaction is on each backend: the guarantees service.runs builds on."""

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from service.db import (
    Database,
    WriteTurn,
    normalize_url,
    open_database,
    upgrade_to_head,
    with_hot_path_pool,
)
from service.limits import CatchUpLimit
from service.runs import catalog, steps
from service.runs.waiting import StepWaiters
from service.schemas import RunCreate, StepReport
from tests.conftest import BACKENDS, Backend, DatabaseProvider


def test_sqlite_connections_are_durable_wal_with_foreign_keys(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        for engine in (database.engine, database.read_engine):
            with engine.connect() as connection:
                pragma = connection.exec_driver_sql
                assert pragma("PRAGMA journal_mode").scalar_one() == "wal"
                assert pragma("PRAGMA synchronous").scalar_one() == 2  # FULL
                assert pragma("PRAGMA foreign_keys").scalar_one() == 1
                assert pragma("PRAGMA busy_timeout").scalar_one() > 0
    finally:
        database.dispose()


def test_sqlite_write_transaction_holds_the_write_lock_before_it_writes(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a writer that has only read so far already excludes other writers."""
    path = tmp_path / "locking.db"
    url = f"sqlite:///{path}"
    upgrade_to_head(url)
    database = open_database(url)
    other_process = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with database.engine.begin() as connection:
            connection.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other_process.execute("BEGIN IMMEDIATE")
            # WAL: readers are not blocked by the writer.
            assert other_process.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        other_process.execute("BEGIN IMMEDIATE")
        other_process.execute("ROLLBACK")
    finally:
        other_process.close()
        database.dispose()


def test_sqlite_read_transaction_does_not_block_writers(tmp_path: Path) -> None:
    path = tmp_path / "reading.db"
    url = f"sqlite:///{path}"
    upgrade_to_head(url)
    database = open_database(url)
    other_process = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with database.read_engine.connect() as connection:
            connection.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
            other_process.execute("BEGIN IMMEDIATE")
            other_process.execute("ROLLBACK")
    finally:
        other_process.close()
        database.dispose()


def test_sqlite_reads_on_the_event_loop_never_wait_for_a_lock(tmp_path: Path) -> None:
    """lr reads run on the event loop with a busy timeout of 0; a locked database sends
    them to a worker thread, which waits there while the loop goes on serving."""
    path = tmp_path / "loop.db"
    url = f"sqlite:///{path}"
    upgrade_to_head(url)
    run = RunCreate.model_validate(
        {"scheduler": {"type": "StepLR", "params": {"step_size": 2}}, "param_groups": [{"lr": 1}]}
    )
    database = open_database(url)
    catalog.create_run(database, "locked-out", run, max_param_groups=4)
    database.dispose()  # WAL grants an exclusive lock only with no other connection open
    assert database.loop_reader is not None
    loop_reader = database.loop_reader
    assert tuple(loop_reader.fetch_one("PRAGMA busy_timeout", {}) or ()) == (0,)
    assert tuple(loop_reader.fetch_one("PRAGMA query_only", {}) or ()) == (1,)
    holder = sqlite3.connect(path, isolation_level=None)

    async def scenario() -> None:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("SELECT count(*) FROM runs").fetchone()
        read = asyncio.create_task(steps.current_lr(database, "locked-out", None))
        await asyncio.sleep(0.2)  # reached only because the read left the loop free
        assert not read.done()
        holder.execute("COMMIT")
        holder.close()  # the exclusive lock goes with the connection
        assert await read == {"step": 0, "lr": [1]}
        assert await steps.current_lr(database, "locked-out", None) == {"step": 0, "lr": [1]}

    try:
        asyncio.run(scenario())
    finally:
        holder.close()
        database.dispose()


def test_sqlite_writers_in_one_process_queue_on_a_lock_and_give_up_as_locked(
    tmp_path: Path,
) -> None:
    """A second writer waits its turn; one that waits too long gets sqlite3's "locked"
    error, which service.runs retries and then answers as a 503, never a hang."""
    turn = WriteTurn(timeout=0.05)
    waited_for: list[bool] = []
    with turn:
        second = threading.Thread(target=lambda: waited_for.append(_takes_turn(turn)))
        second.start()
        second.join()
    assert waited_for == [False]
    assert _takes_turn(turn)
    database = open_database(f"sqlite:///{tmp_path / 'queue.db'}")
    try:
        assert isinstance(database.write_lock, WriteTurn)
    finally:
        database.dispose()


def _takes_turn(turn: WriteTurn) -> bool:
    try:
        with turn:
            return True
    except sqlite3.OperationalError as error:
        assert "locked" in str(error)
        return False


def test_sqlite_directory_is_created_on_open(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.db"
    database = open_database(f"sqlite:///{path}")
    try:
        with database.engine.begin() as connection:
            connection.execute(sa.text("SELECT 1"))
        assert path.exists()
    finally:
        database.dispose()


@pytest.mark.postgres
def test_postgresql_transactions_are_read_committed_and_unlocked_in_process(
    database_provider: DatabaseProvider,
) -> None:
    database = open_database(database_provider.fresh_url("postgresql"))
    try:
        assert database.dialect == "postgresql"
        with database.engine.begin() as connection:
            isolation = connection.exec_driver_sql("SHOW transaction_isolation").scalar_one()
        assert isolation == "read committed"
        with database.write_lock, database.write_lock:
            pass  # a no-op: PostgreSQL's row locks order the writers
    finally:
        database.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_leave_no_transaction_open(
    backend: Backend, database_provider: DatabaseProvider
) -> None:
    """Reads run in autocommit: no BEGIN before them, nothing to roll back after them."""
    url = database_provider.fresh_url(backend)
    upgrade_to_head(url)
    database = open_database(url)
    try:
        with database.read_engine.connect() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM runs").scalar_one()
            driver_connection = connection.connection.driver_connection
            if backend == "sqlite":
                assert not driver_connection.in_transaction  # type: ignore[union-attr]
            else:
                assert (
                    driver_connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                )  # type: ignore[union-attr]
    finally:
        database.dispose()


async def report_step(
    database: Database, run_id: str, step: int, recorded_steps: steps.RecordedSteps
) -> dict[str, Any]:
    return await steps.report_step(
        database,
        run_id,
        StepReport(step=step),
        catch_up=CatchUpLimit(steps=10, values=100),
        recorded_steps=recorded_steps,
        waiters=StepWaiters(),
    )


@pytest.mark.postgres
def test_connections_the_server_dropped_are_replaced_without_failing_a_request(
    database_provider: DatabaseProvider,
) -> None:
    """No pre-ping: a dropped pooled connection fails its statement once, and the use case
    runs again on a fresh connection instead of answering 500. On both of PostgreSQL's
    pools: asyncpg's (step reports, lr reads) and SQLAlchemy's (everything else)."""
    url = database_provider.fresh_url("postgresql")
    upgrade_to_head(url)
    run = RunCreate.model_validate(
        {"scheduler": {"type": "StepLR", "params": {"step_size": 2}}, "param_groups": [{"lr": 1}]}
    )
    recorded_steps = steps.RecordedSteps()

    def terminate_other_sessions(database: Database) -> None:
        with database.engine.connect() as admin:
            admin.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

    async def report(database: Database, step: int) -> dict[str, Any]:
        return await report_step(database, "dropped", step, recorded_steps)

    async def scenario() -> None:
        database = await with_hot_path_pool(open_database(url), pool_size=4)
        try:
            catalog.create_run(database, "dropped", run, max_param_groups=4)
            await report(database, 1)
            assert (await steps.current_lr(database, "dropped", None))["step"] == 1
            terminate_other_sessions(database)
            answer = await report(database, 2)
            assert (answer["step"], answer["replayed"]) == (2, False)
            assert (await report(database, 2))["replayed"] is True
            terminate_other_sessions(database)
            assert (await steps.current_lr(database, "dropped", None))["step"] == 2
            assert catalog.get_run(database, "dropped")["step"] == 2
        finally:
            await database.close()

    asyncio.run(scenario())


@pytest.mark.postgres
def test_a_migration_under_the_hot_paths_prepared_statements_costs_a_retry_not_a_request(
    database_provider: DatabaseProvider,
) -> None:
    """asyncpg keeps each connection's statements prepared; a table changed under them
    (a migration applied while this replica runs) fails the next one once, inside its
    transaction, and the step report runs again on freshly prepared statements."""
    url = database_provider.fresh_url("postgresql")
    upgrade_to_head(url)
    run = RunCreate.model_validate(
        {"scheduler": {"type": "StepLR", "params": {"step_size": 2}}, "param_groups": [{"lr": 1}]}
    )
    recorded_steps = steps.RecordedSteps()

    async def report(database: Database, step: int) -> dict[str, Any]:
        return await report_step(database, "migrated", step, recorded_steps)

    async def scenario() -> None:
        database = await with_hot_path_pool(open_database(url), pool_size=1)
        try:
            catalog.create_run(database, "migrated", run, max_param_groups=4)
            await report(database, 1)
            await report(database, 2)
            with database.engine.begin() as connection:
                connection.exec_driver_sql("ALTER TABLE runs ALTER COLUMN step TYPE bigint")
            answer = await report(database, 3)
            assert (answer["step"], answer["replayed"]) == (3, False)
            assert catalog.get_run(database, "migrated")["step"] == 3
        finally:
            await database.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///./data/lrkeeper.db", "sqlite:///./data/lrkeeper.db"),
    ],
)
def test_plain_postgresql_urls_use_psycopg_3(given: str, expected: str) -> None:
    assert normalize_url(given) == expected
