"""Request ids and log lines, as an operator reads them from a ``lrkeeper serve`` process.

The server logs JSON (``LRKEEPER_LOG_FORMAT=json``, as the Docker image does).
A request's line is written after its answer has left, so tests wait for it
(a deadline, not a timing assertion).
"""

import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.config import Settings
from service.logs import JsonFormatter, RequestIdFilter
from service.main import create_app
from tests.conftest import LiveServer, ServerPool

LOG_DEADLINE_SECONDS = 30.0
STEP_LR = {"type": "StepLR", "params": {"step_size": 1}}


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    pool = ServerPool(tmp_path_factory.mktemp("json-logs"))
    try:
        yield pool("sqlite", environment={"LRKEEPER_LOG_FORMAT": "json"})
    finally:
        pool.close()


@pytest.fixture
def http(json_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=json_server.base_url, timeout=30) as client:
        yield client


def server_lines(server: LiveServer) -> list[str]:
    """The server's own output: the fixture's ``--- launching`` markers left out."""
    lines = server.log.read_text(errors="replace").splitlines()
    return [line for line in lines if line and not line.startswith("--- launching")]


def log_records(server: LiveServer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server_lines(server)]


def lines_of_request(server: LiveServer, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The records tagged with ``request_id``, once at least ``count`` of them are written."""
    deadline = time.monotonic() + LOG_DEADLINE_SECONDS
    while True:
        found = [record for record in log_records(server) if record.get("request_id") == request_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def new_run(http: httpx.Client) -> str:
    run_id = f"logs-{uuid.uuid4().hex[:12]}"
    created = http.put(
        f"/v1/runs/{run_id}", json={"scheduler": STEP_LR, "param_groups": [{"lr": 1}]}
    )
    assert created.status_code == 201, created.text
    return run_id


def test_a_sent_request_id_is_echoed_and_tags_the_requests_log_line(
    http: httpx.Client, json_server: LiveServer
) -> None:
    request_id = f"trace:{uuid.uuid4().hex}.1-a_b"
    response = http.get("/healthz", headers={"X-Request-ID": request_id})

    assert response.headers["x-request-id"] == request_id
    assert len(lines_of_request(json_server, request_id)) == 1


def test_a_request_without_an_id_gets_a_fresh_one_each_time(http: httpx.Client) -> None:
    first = http.get("/healthz").headers["x-request-id"]
    second = http.get("/healthz").headers["x-request-id"]

    assert first != second
    assert len(first) == 32 and int(first, 16) >= 0


@pytest.mark.parametrize(
    "unsafe", ["a" * 129, "has space", 'quote"d', "new\\nline", "é"], ids=lambda s: s[:12]
)
def test_an_unsafe_request_id_is_replaced_by_a_fresh_one(http: httpx.Client, unsafe: str) -> None:
    response = http.get("/healthz", headers={"X-Request-ID": unsafe.encode("utf-8")})

    assert response.headers["x-request-id"] != unsafe
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/no/such/path", None, 404),
        ("DELETE", "/healthz", None, 405),
        ("POST", "/v1/runs/x/steps", {"step": "one"}, 422),
        ("GET", "/v1/runs/no-such-run-here", None, 404),
    ],
)
def test_problem_answers_carry_the_request_id(
    http: httpx.Client, method: str, path: str, body: Any, status: int
) -> None:
    request_id = uuid.uuid4().hex
    response = http.request(method, path, json=body, headers={"X-Request-ID": request_id})

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == request_id


def test_each_request_is_one_json_line_with_route_status_duration_and_run_id(
    http: httpx.Client, json_server: LiveServer
) -> None:
    run_id = new_run(http)
    request_id = uuid.uuid4().hex

    answered = http.post(
        f"/v1/runs/{run_id}/steps", json={"step": 1}, headers={"X-Request-ID": request_id}
    )

    assert answered.status_code == 200
    [line] = lines_of_request(json_server, request_id)
    assert line["logger"] == "lrkeeper.access"
    assert line["level"] == "INFO"
    assert line["method"] == "POST"
    assert line["route"] == "/v1/runs/{run_id}/steps"
    assert line["status"] == 200
    assert line["run_id"] == run_id
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert isinstance(line["pid"], int)
    # uvicorn's own access line is off: nothing else names this request's path.
    assert not [text for text in server_lines(json_server) if f"{run_id}/steps" in text]


def test_a_refused_body_is_logged_under_its_route_and_run(
    http: httpx.Client, json_server: LiveServer
) -> None:
    request_id = uuid.uuid4().hex
    response = http.put(
        "/v1/runs/logs-too-large",
        content=b" " * (1024 * 1024 + 1),
        headers={"X-Request-ID": request_id, "content-type": "application/json"},
    )

    assert response.status_code == 413
    assert response.headers["x-request-id"] == request_id
    [line] = lines_of_request(json_server, request_id)
    assert (line["status"], line["route"], line["run_id"]) == (
        413,
        "/v1/runs/{run_id}",
        "logs-too-large",
    )


def test_the_authorization_header_never_reaches_the_log(
    http: httpx.Client, json_server: LiveServer
) -> None:
    secret = f"secret-token-{uuid.uuid4().hex}"
    request_id = uuid.uuid4().hex
    run_id = new_run(http)

    http.post(
        f"/v1/runs/{run_id}/steps",
        json={"step": 1},
        headers={"Authorization": f"Bearer {secret}", "X-Request-ID": request_id},
    )

    assert lines_of_request(json_server, request_id)
    assert secret not in json_server.log.read_text(errors="replace")


def test_every_line_the_server_writes_is_a_json_object(
    http: httpx.Client, json_server: LiveServer
) -> None:
    request_id = uuid.uuid4().hex
    http.get("/healthz", headers={"X-Request-ID": request_id})
    assert lines_of_request(json_server, request_id)

    records = log_records(json_server)  # raises on any line that is not JSON

    loggers = {record["logger"] for record in records}
    assert {"alembic.runtime.migration", "uvicorn.error", "lrkeeper.access"} <= loggers
    assert all(isinstance(record, dict) and record["message"] for record in records)


def test_readyz_probes_add_no_alembic_lines_while_migrations_keep_theirs(
    http: httpx.Client, json_server: LiveServer
) -> None:
    def alembic_lines() -> list[dict[str, Any]]:
        return [r for r in log_records(json_server) if r["logger"].startswith("alembic")]

    before = alembic_lines()
    request_ids = [uuid.uuid4().hex for _ in range(20)]
    for request_id in request_ids:
        assert http.get("/readyz", headers={"X-Request-ID": request_id}).status_code == 200
    lines_of_request(json_server, request_ids[-1])

    assert any("Running upgrade" in record["message"] for record in before)
    assert alembic_lines() == before


def test_a_500_is_logged_as_one_json_line_with_its_traceback_and_request_id(
    serve_app: Callable[[FastAPI], str], tmp_path: Path
) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'crash.db'}"))

    @app.get("/test-only/crash")
    def crash() -> None:
        raise RuntimeError("boom in a route")

    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    errors = logging.getLogger("lrkeeper.errors")
    errors.addHandler(handler)
    try:
        response = httpx.get(
            f"{serve_app(app)}/test-only/crash", headers={"X-Request-ID": "crash-1"}
        )
    finally:
        errors.removeHandler(handler)

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "crash-1"
    [line] = [json.loads(text) for text in captured.getvalue().splitlines()]
    assert line["request_id"] == "crash-1"
    assert line["level"] == "ERROR"
    assert "RuntimeError: boom in a route" in line["traceback"]
