"""Alembic's entry point: migrate the database the service (or the caller) names.

The URL comes from ``config.attributes["database_url"]`` when the service
migrates (service.db.upgrade_to_head), else from the service's own settings, so
``alembic upgrade head`` on the command line honours LRKEEPER_DATABASE_URL. A
caller may also hand over an open connection as ``config.attributes["connection"]``.
"""

from alembic import context
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from service.config import Settings
from service.db import create_postgresql_engine, create_sqlite_engine, dialect_of, normalize_url
from service.models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    url: str | None = config.attributes.get("database_url")
    return normalize_url(url if url is not None else Settings().database_url)


def migration_engine(url: str) -> Engine:
    if dialect_of(url) == "sqlite":
        return create_sqlite_engine(
            url, begin="BEGIN IMMEDIATE", enforce_foreign_keys=False, poolclass=NullPool
        )
    return create_postgresql_engine(url, poolclass=NullPool)


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=dialect_of(url) == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # True on SQLite too: service.db makes the driver emit a real BEGIN, so a
        # failed migration rolls back instead of leaving half a schema behind.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given_connection: Connection | None = config.attributes.get("connection")
    if given_connection is not None:
        run_migrations_on(given_connection)
        return
    engine = migration_engine(database_url())
    try:
        with engine.connect() as connection:
            run_migrations_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
