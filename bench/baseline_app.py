"""Baseline (a) for bench.service: the hot path's work on a bare FastAPI app and the raw driver.

``python -m bench.baseline_app (--sqlite PATH | --postgresql CONNINFO) --port N``

What an engineer would write by hand to keep a cosine schedule in a database,
with nothing of lrkeeper in it: no SQLAlchemy, no migrations, no problem
handlers, no engine restore, no metrics middleware. ``POST /runs/{run_id}/steps``
locks the run row (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``SELECT … FOR
UPDATE``), computes torch's chainable cosine step from the stored lr, inserts a
step row, updates the run row and commits; ``GET /runs/{run_id}/lr`` selects the
current lr. The rows hold JSON of the same shape lrkeeper stores (lr list, a
small state object), so both write comparable bytes.

Served by uvicorn with the settings ``lrkeeper serve`` uses (one worker, log
level info with the access log, the same graceful-shutdown timeout), so the
ratio measures lrkeeper's own cost, not a server setting. Database durability
matches lrkeeper's too: SQLite in WAL mode with ``synchronous=FULL``, writers of
this process queued on one lock (as lrkeeper's ``write_lock`` does) instead of
spinning on ``busy_timeout``; PostgreSQL at READ COMMITTED with synchronous commit.
"""

import argparse
import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

GRACEFUL_SHUTDOWN_SECONDS = 8  # what service/cli.py passes to uvicorn

SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE,
        step INTEGER NOT NULL, t_max INTEGER NOT NULL, base_lrs TEXT NOT NULL,
        lr TEXT NOT NULL, state TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS steps (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_pk INTEGER NOT NULL REFERENCES runs (id),
        step INTEGER NOT NULL, lr TEXT NOT NULL, state TEXT NOT NULL, metrics TEXT NOT NULL,
        worker TEXT, recorded_at TEXT NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_steps_run_pk_step ON steps (run_pk, step)",
)
POSTGRESQL_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        id BIGSERIAL PRIMARY KEY, run_id VARCHAR(128) NOT NULL UNIQUE,
        step INTEGER NOT NULL, t_max INTEGER NOT NULL, base_lrs JSONB NOT NULL,
        lr JSONB NOT NULL, state JSONB NOT NULL, updated_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS steps (
        id BIGSERIAL PRIMARY KEY, run_pk BIGINT NOT NULL REFERENCES runs (id),
        step INTEGER NOT NULL, lr JSONB NOT NULL, state JSONB NOT NULL, metrics JSONB NOT NULL,
        worker VARCHAR(256), recorded_at TIMESTAMPTZ NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_steps_run_pk_step ON steps (run_pk, step)",
)


class RunCreate(BaseModel):
    lrs: list[float]
    t_max: int = 100


class StepReport(BaseModel):
    step: int
    metrics: dict[str, float] | None = None
    worker: str | None = None


def cosine_step(lrs: list[float], base_lrs: list[float], epoch: int, t_max: int) -> list[float]:
    """torch's chainable CosineAnnealingLR step (eta_min 0) from the stored lr."""
    if (epoch - 1 - t_max) % (2 * t_max) == 0:
        return [
            lr + base * (1 - math.cos(math.pi / t_max)) / 2
            for lr, base in zip(lrs, base_lrs, strict=True)
        ]
    factor = (1 + math.cos(math.pi * epoch / t_max)) / (1 + math.cos(math.pi * (epoch - 1) / t_max))
    return [factor * lr for lr in lrs]


@dataclass
class Store:
    """The raw-driver work behind each endpoint, one connection per server thread."""

    connect: Callable[[], Any]
    write_lock: AbstractContextManager[Any]
    dialect: str

    def __post_init__(self) -> None:
        self._local = threading.local()

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self.connect()
        return connection

    def _sql(self, statement: str) -> str:
        return statement if self.dialect == "sqlite" else statement.replace("?", "%s")

    @contextmanager
    def _write_transaction(self) -> Iterator[Any]:
        with self.write_lock:
            connection = self._connection()
            if self.dialect == "sqlite":
                connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    def create_run(self, run_id: str, body: RunCreate) -> None:
        lrs = json.dumps(body.lrs)
        state = json.dumps(state_of(0, body.lrs, body.lrs))
        with self._write_transaction() as connection:
            connection.execute(
                self._sql(
                    "INSERT INTO runs (run_id, step, t_max, base_lrs, lr, state, updated_at) "
                    "VALUES (?, 0, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING"
                ),
                (run_id, body.t_max, lrs, lrs, state, _now(self.dialect)),
            )

    def advance(self, run_id: str, report: StepReport) -> dict[str, Any]:
        with self._write_transaction() as connection:
            lock = "" if self.dialect == "sqlite" else " FOR UPDATE"
            row = connection.execute(
                self._sql("SELECT id, step, t_max, base_lrs, lr FROM runs WHERE run_id = ?" + lock),
                (run_id,),
            ).fetchone()
            if row is None:
                raise HTTPException(404, "no such run")
            run_pk, step, t_max, base_lrs, lrs = row
            if report.step != step + 1:
                raise HTTPException(409, f"expected step {step + 1}")
            if self.dialect == "sqlite":
                base_lrs, lrs = json.loads(base_lrs), json.loads(lrs)
            new_lrs = cosine_step(lrs, base_lrs, report.step, t_max)
            lr_json = json.dumps(new_lrs)
            state_json = json.dumps(state_of(report.step, base_lrs, new_lrs))
            now = _now(self.dialect)
            connection.execute(
                self._sql(
                    "INSERT INTO steps (run_pk, step, lr, state, metrics, worker, recorded_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    run_pk,
                    report.step,
                    lr_json,
                    state_json,
                    json.dumps(report.metrics or {}),
                    report.worker,
                    now,
                ),
            )
            connection.execute(
                self._sql(
                    "UPDATE runs SET step = ?, lr = ?, state = ?, updated_at = ? WHERE id = ?"
                ),
                (report.step, lr_json, state_json, now, run_pk),
            )
        return {"step": report.step, "lr": new_lrs, "replayed": False, "events": []}

    def current_lr(self, run_id: str) -> dict[str, Any]:
        connection = self._connection()
        row = connection.execute(
            self._sql("SELECT step, lr FROM runs WHERE run_id = ?"), (run_id,)
        ).fetchone()
        if self.dialect == "postgresql":
            connection.rollback()  # end the read's transaction, as a pool's check-in would
        if row is None:
            raise HTTPException(404, "no such run")
        step, lrs = row
        return {"step": step, "lr": json.loads(lrs) if self.dialect == "sqlite" else lrs}


def state_of(step: int, base_lrs: list[float], lrs: list[float]) -> dict[str, Any]:
    """The same fields lrkeeper keeps for a cosine run, so both write rows of one size."""
    return {
        "last_epoch": step,
        "base_lrs": base_lrs,
        "_step_count": step + 1,
        "param_groups": [
            {"lr": lr, "momentum": 0.9, "initial_lr": base}
            for lr, base in zip(lrs, base_lrs, strict=True)
        ],
    }


def _now(dialect: str) -> Any:
    moment = datetime.now(UTC)
    return moment.isoformat() if dialect == "sqlite" else moment


def sqlite_store(path: str) -> Store:
    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    setup = connect()
    for statement in SQLITE_SCHEMA:
        setup.execute(statement)
    setup.close()
    return Store(connect, threading.Lock(), "sqlite")


def postgresql_store(conninfo: str) -> Store:
    with psycopg.connect(conninfo, autocommit=True) as setup:
        for statement in POSTGRESQL_SCHEMA:
            setup.execute(statement)
    return Store(lambda: psycopg.connect(conninfo), nullcontext(), "postgresql")


def create_app(store: Store) -> FastAPI:
    app = FastAPI(title="lrkeeper benchmark baseline")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.put("/runs/{run_id}")
    def put_run(run_id: str, body: RunCreate) -> JSONResponse:
        store.create_run(run_id, body)
        return JSONResponse({"run_id": run_id})

    @app.post("/runs/{run_id}/steps")
    def report_step(run_id: str, body: StepReport) -> JSONResponse:
        return JSONResponse(store.advance(run_id, body))

    @app.get("/runs/{run_id}/lr")
    def get_lr(run_id: str) -> JSONResponse:
        return JSONResponse(store.current_lr(run_id))

    return app


def parse_server_arguments(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """The listening options both baselines take, then ``argv`` parsed."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def serve(app: FastAPI, args: argparse.Namespace) -> None:
    """uvicorn with the settings ``lrkeeper serve`` uses (see the module docstring)."""
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    database = parser.add_mutually_exclusive_group(required=True)
    database.add_argument("--sqlite", help="SQLite file path")
    database.add_argument("--postgresql", help="psycopg conninfo, e.g. postgresql://u@h/db")
    args = parse_server_arguments(parser, argv)
    store = sqlite_store(args.sqlite) if args.sqlite else postgresql_store(args.postgresql)
    serve(create_app(store), args)


if __name__ == "__main__":
    main()
