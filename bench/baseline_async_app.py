"""Baseline (a), async: the same bare endpoints as ``bench.baseline_app`` on asyncpg.

``python -m bench.baseline_async_app --postgresql CONNINFO --port N``

The issue left sync or async to the benchmark. This is the async side of that
question with nothing of lrkeeper in it: ``async def`` endpoints on the event
loop (no thread-pool hop), an asyncpg pool, and the very statements, schema,
cosine arithmetic and uvicorn settings of the sync baseline. If this is not
clearly faster than the sync baseline on the same database, an async rewrite of
lrkeeper could not be either: the framework's share is the same on both sides.
PostgreSQL only: SQLite has no asynchronous driver, only thread-pool wrappers.
"""

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import psycopg
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from bench.baseline_app import (
    POSTGRESQL_SCHEMA,
    RunCreate,
    StepReport,
    cosine_step,
    parse_server_arguments,
    serve,
    state_of,
)

POOL_SIZE = 16  # lrkeeper's default pool size


def create_app(conninfo: str) -> FastAPI:
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pools.append(await asyncpg.create_pool(conninfo, min_size=POOL_SIZE, max_size=POOL_SIZE))
        try:
            yield
        finally:
            await pools[0].close()

    app = FastAPI(title="lrkeeper benchmark baseline, async", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.put("/runs/{run_id}")
    async def put_run(run_id: str, body: RunCreate) -> JSONResponse:
        lrs = json.dumps(body.lrs)
        state = json.dumps(state_of(0, body.lrs, body.lrs))
        await pools[0].execute(
            "INSERT INTO runs (run_id, step, t_max, base_lrs, lr, state, updated_at) "
            "VALUES ($1, 0, $2, $3, $4, $5, $6) ON CONFLICT (run_id) DO NOTHING",
            run_id,
            body.t_max,
            lrs,
            lrs,
            state,
            datetime.now(UTC),
        )
        return JSONResponse({"run_id": run_id})

    @app.post("/runs/{run_id}/steps")
    async def report_step(run_id: str, body: StepReport) -> JSONResponse:
        async with pools[0].acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "SELECT id, step, t_max, base_lrs, lr FROM runs WHERE run_id = $1 FOR UPDATE",
                run_id,
            )
            if row is None:
                raise HTTPException(404, "no such run")
            if body.step != row["step"] + 1:
                raise HTTPException(409, f"expected step {row['step'] + 1}")
            base_lrs, lrs = json.loads(row["base_lrs"]), json.loads(row["lr"])
            new_lrs = cosine_step(lrs, base_lrs, body.step, row["t_max"])
            lr_json = json.dumps(new_lrs)
            state_json = json.dumps(state_of(body.step, base_lrs, new_lrs))
            now = datetime.now(UTC)
            await connection.execute(
                "INSERT INTO steps (run_pk, step, lr, state, metrics, worker, recorded_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                row["id"],
                body.step,
                lr_json,
                state_json,
                json.dumps(body.metrics or {}),
                body.worker,
                now,
            )
            await connection.execute(
                "UPDATE runs SET step = $1, lr = $2, state = $3, updated_at = $4 WHERE id = $5",
                body.step,
                lr_json,
                state_json,
                now,
                row["id"],
            )
        answer: dict[str, Any] = {"step": body.step, "lr": new_lrs, "replayed": False}
        return JSONResponse({**answer, "events": []})

    @app.get("/runs/{run_id}/lr")
    async def get_lr(run_id: str) -> JSONResponse:
        row = await pools[0].fetchrow("SELECT step, lr FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise HTTPException(404, "no such run")
        return JSONResponse({"step": row["step"], "lr": json.loads(row["lr"])})

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgresql", required=True, help="conninfo, e.g. postgresql://u@h/db")
    args = parse_server_arguments(parser, argv)
    with psycopg.connect(args.postgresql, autocommit=True) as setup:
        for statement in POSTGRESQL_SCHEMA:
            setup.execute(statement)
    serve(create_app(args.postgresql), args)


if __name__ == "__main__":
    main()
