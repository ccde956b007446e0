"""What access control costs the hot path: the check alone, and whole requests with and without it.

``python -m bench.access [--quick] [--write]``

Everything runs in this process on one event loop, against apps from
``create_app`` on one migrated SQLite database (in a temporary directory),
each inside its own lifespan, called through a minimal ASGI driver (no sockets,
no HTTP parsing, no client library: those would only add the same constant to
every row and hide a microsecond). The apps:

- **no check**: ``create_app`` with the access middleware taken out again: the baseline;
- **anonymous**, **protected** (no tokens; requests from 127.0.0.1), **tokens**
  (a read and a write token, each request carrying the write token).

The hot path is ``POST /v1/runs/{id}/steps`` (a real advance each time, a
durable SQLite commit) and ``GET /v1/runs/{id}/lr``. Rounds interleave the apps in
rotating order; a block's time per request is its wall time over its request count.

Two measures, both against the hot path's per-request time of the no-check app
from the same sitting:

1. **the check alone**: the access middleware around an inner app that does
   nothing, minus that inner app called directly, for the hot path's own scope
   (its headers as httpx sends them), timed after each round's requests so that
   its share is judged against requests timed under the same load.
2. **whole requests**: each app's µs per request ÷ the no-check app's, per round.
   Honest but noisy: the difference is a microsecond in a hundred or more.
"""

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from bench import (
    format_number,
    format_ratio,
    machine_description,
    markdown_table,
    median,
    timestamp,
    write_section,
)
from service.access import AccessMiddleware, AccessPolicy
from service.config import Settings
from service.db import upgrade_to_head
from service.main import create_app

READ_TOKEN = "bench-read-token-0123456789abcdef"
WRITE_TOKEN = "bench-write-token-0123456789abcdef"
TOKENS = f"read:{READ_TOKEN},write:{WRITE_TOKEN}"
COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 1000}}
GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.9}]
TARGET = 0.03  # the check may cost at most 3 % of a hot-path request
CHECK_CALLS = 5000

NO_CHECK, ANONYMOUS, PROTECTED, WITH_TOKENS = "no check", "anonymous", "protected", "tokens"
POST_STEPS, GET_LR = "POST /v1/runs/{id}/steps", "GET /v1/runs/{id}/lr"

Request = Callable[[], Awaitable[int]]


def headers_for(body: bytes | None, token: str | None) -> list[tuple[bytes, bytes]]:
    """What httpx (the client library) sends with a hot-path request."""
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"accept", b"application/json, application/problem+json"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"),
        (b"user-agent", b"lrkeeper-client/0.1"),
    ]
    if body is not None:
        headers += [(b"content-length", str(len(body)).encode())]
        headers += [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return headers


def scope_for(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call_asgi(app: Callable[..., Awaitable[None]], scope: Scope, body: bytes) -> int:
    """One request through ``app``; its status."""
    received = False
    status = 0

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


def without_access_middleware(app: FastAPI) -> FastAPI:
    """The same app with the check taken out (before its middleware stack is first built)."""
    app.user_middleware = [
        entry for entry in app.user_middleware if entry.cls is not AccessMiddleware
    ]
    return app


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    async with app.router.lifespan_context(app):
        yield app


def hot_path_requests(app: FastAPI, run_id: str, token: str | None) -> dict[str, Request]:
    """The two hot-path calls against ``app``; each step report advances the run by one."""
    next_step = 1
    lr_scope = scope_for("GET", f"/v1/runs/{run_id}/lr", headers_for(None, token))

    async def post_step() -> int:
        nonlocal next_step
        body = json.dumps({"step": next_step, "worker": "bench"}).encode()
        scope = scope_for("POST", f"/v1/runs/{run_id}/steps", headers_for(body, token))
        status = await call_asgi(app, scope, body)
        if status == 200:
            next_step += 1
        return status

    async def get_lr() -> int:
        return await call_asgi(app, lr_scope, b"")

    return {POST_STEPS: post_step, GET_LR: get_lr}


async def time_block(request: Request, calls: int) -> float:
    """µs per request over ``calls`` back-to-back requests; every one must be a 200."""
    started = time.perf_counter()
    for _ in range(calls):
        status = await request()
        if status != 200:
            raise RuntimeError(f"a benchmark request answered {status}")
    return (time.perf_counter() - started) / calls * 1e6


def check_alone(settings: Settings, token: str | None) -> Callable[[int], Awaitable[float]]:
    """A timer of the µs the access middleware adds around an inner app that does nothing."""

    async def nothing(_scope: Scope, _receive: Receive, _send: Send) -> None:
        return None

    middleware = AccessMiddleware(
        nothing, policy=AccessPolicy.from_settings(settings), open_paths=("/healthz",)
    )
    body = b'{"step": 1, "worker": "bench"}'
    scope = scope_for("POST", "/v1/runs/bench/steps", headers_for(body, token))

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(_message: Message) -> None:
        return None

    async def per_call(calls: int) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await middleware(scope, receive, send)
        guarded = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(calls):
            await nothing(scope, receive, send)
        bare = time.perf_counter() - started
        return (guarded - bare) / calls * 1e6

    return per_call


async def measure(rounds: int, calls: int, directory: Path) -> dict[str, Any]:
    url = f"sqlite:///{directory / 'bench-access.db'}"
    upgrade_to_head(url)
    settings_by_app = {
        NO_CHECK: Settings(database_url=url),
        ANONYMOUS: Settings(database_url=url, allow_anonymous=True),
        PROTECTED: Settings(database_url=url),
        WITH_TOKENS: Settings(database_url=url, tokens=TOKENS),
    }
    token_by_app = {WITH_TOKENS: WRITE_TOKEN}
    check_timers = {
        name: check_alone(settings_by_app[name], token_by_app.get(name))
        for name in (ANONYMOUS, PROTECTED, WITH_TOKENS)
    }
    checks: dict[str, list[float]] = {}
    check_ratios: dict[tuple[str, str], list[float]] = {}
    timings: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        requests: dict[str, dict[str, Request]] = {}
        for name, settings in settings_by_app.items():
            app = create_app(settings)
            if name == NO_CHECK:
                app = without_access_middleware(app)
            await stack.enter_async_context(running(app))
            token = token_by_app.get(name)
            run_id = f"bench-access-{name.replace(' ', '-')}"
            body = json.dumps({"scheduler": COSINE, "param_groups": GROUPS}).encode()
            put_scope = scope_for("PUT", f"/v1/runs/{run_id}", headers_for(body, WRITE_TOKEN))
            if await call_asgi(app, put_scope, body) not in (200, 201):
                raise RuntimeError(f"could not create the run of {name}")
            requests[name] = hot_path_requests(app, run_id, token)
        names = list(settings_by_app)
        for endpoint in (POST_STEPS, GET_LR):
            for name in names:  # warm up: first requests build caches and open connections
                await time_block(requests[name][endpoint], 20)
            for round_index in range(rounds):
                shift = round_index % len(names)
                this_round = {}
                for name in [*names[shift:], *names[:shift]]:
                    this_round[name] = await time_block(requests[name][endpoint], calls)
                    timings.setdefault((endpoint, name), []).append(this_round[name])
                for name in names:
                    ratio = this_round[name] / this_round[NO_CHECK]
                    ratios.setdefault((endpoint, name), []).append(ratio)
                # The check alone, in the same round: its share is judged against requests
                # timed under the same load, not against another minute's.
                for name, timer in check_timers.items():
                    check_us = await timer(CHECK_CALLS)
                    checks.setdefault(name, []).append(check_us)
                    share = check_us / this_round[NO_CHECK]
                    check_ratios.setdefault((endpoint, name), []).append(share)
    return {"checks": checks, "check_ratios": check_ratios, "timings": timings, "ratios": ratios}


def report(results: dict[str, Any], rounds: int, calls: int, quick: bool) -> str:
    checks, check_ratios = results["checks"], results["check_ratios"]
    timings, ratios = results["timings"], results["ratios"]
    shares = {key: median(values) for key, values in check_ratios.items()}
    check_rows = [
        [
            name,
            format_number(median(checks[name]), 2),
            *(f"{shares[(endpoint, name)]:.2%}" for endpoint in (POST_STEPS, GET_LR)),
        ]
        for name in (ANONYMOUS, PROTECTED, WITH_TOKENS)
    ]
    check_table = markdown_table(
        ["mode", "check alone, µs", f"÷ {POST_STEPS}", f"÷ {GET_LR}"], check_rows
    )
    request_rows = [
        [
            endpoint,
            name,
            format_number(median(timings[(endpoint, name)]), 1),
            "" if name == NO_CHECK else format_ratio(median(ratios[(endpoint, name)])),
        ]
        for endpoint in (POST_STEPS, GET_LR)
        for name in (NO_CHECK, ANONYMOUS, PROTECTED, WITH_TOKENS)
    ]
    request_table = markdown_table(
        ["endpoint", "app", "µs per request", "÷ no check"], request_rows
    )
    worst = max(shares.values())
    verdict = (
        f"{'met' if worst <= TARGET else 'MISSED'}: the check costs at most {TARGET:.0%} of a "
        f"hot-path request (worst mode against the faster endpoint: {worst:.2%})."
    )
    mode = "quick" if quick else "full"
    return (
        "## Access control: the check's cost on the hot path\n\n"
        f"{timestamp()}, {mode} run ({rounds} rounds × {calls} requests per app, rotating order), "
        f"in-process ASGI calls on SQLite; {machine_description()}.\n\n"
        f"The check alone ({CHECK_CALLS:,} calls after each round's requests; median over "
        f"rounds), and its share of a hot-path request of the app without it, judged round by "
        f"round:\n\n{check_table}\n\n"
        f"Whole requests (noisy: the differences are within the machine's jitter):\n\n"
        f"{request_table}\n\n{verdict}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: fewer rounds")
    parser.add_argument("--write", action="store_true", help="update bench/results.md")
    args = parser.parse_args(argv)
    rounds, calls = (3, 100) if args.quick else (10, 300)
    with tempfile.TemporaryDirectory(prefix="lrkeeper-bench-access-") as directory:
        results = anyio.run(measure, rounds, calls, Path(directory))
    text = report(results, rounds, calls, args.quick)
    print(text)
    if args.write:
        write_section("bench.access", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
