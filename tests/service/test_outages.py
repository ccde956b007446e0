"""The database going away: 503 with Retry-After in bounded time, never a 500, never a hang.

PostgreSQL is reached through a TCP proxy the test cuts (every connection reset, new
ones refused) and restores; SQLite is locked by another process, or its disk is full.
While the database is away every route that needs it answers 503 problem+json with
``Retry-After`` and /readyz says not ready; routes that need no database (/healthz,
preview, the type list) keep answering. When it comes back the same server process
recovers by itself. Every request carries a client timeout above the service's bound
(about 10 s): a request that hung would fail the test.
"""

import resource
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ServerPool
from tests.service.tcp_proxy import TcpProxy

# Above the service's own bound (three bounded waits of 3 s); a hang fails the request.
CLIENT_TIMEOUT_SECONDS = 15.0
RECOVERY_DEADLINE_SECONDS = 60.0
SCHEDULER = {"type": "StepLR", "params": {"step_size": 2, "gamma": 0.5}}
GROUPS = [{"lr": 0.1}]


def database_routes(run_id: str, next_step: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, json body) for every route that reads or writes the database."""
    runs = f"/v1/runs/{run_id}"
    return [
        ("PUT", f"/v1/runs/new-{uuid.uuid4().hex[:8]}", {"scheduler": SCHEDULER,
                                                         "param_groups": GROUPS}),
        ("GET", runs, None),
        ("GET", "/v1/runs", None),
        ("PATCH", runs, {"metadata": {"note": "outage"}}),
        ("POST", f"{runs}/steps", {"step": next_step}),
        ("GET", f"{runs}/lr", None),
        ("GET", f"{runs}/lr?step=1", None),
        ("POST", f"{runs}/lr", {"lr": [0.2]}),
        ("POST", f"{runs}/rewind", {"step": 1}),
        ("GET", f"{runs}/history", None),
        ("GET", f"{runs}/events", None),
        ("GET", f"{runs}/lr-suggestion", None),
        ("GET", "/", None),
        ("GET", f"/runs/{run_id}", None),
    ]  # fmt: skip


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["type"].endswith("service-unavailable")


def start_run(client: httpx.Client, steps: int) -> str:
    run_id = f"outage-{uuid.uuid4().hex[:10]}"
    created = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": SCHEDULER, "param_groups": GROUPS}
    )
    assert created.status_code == 201, created.text
    for step in range(1, steps + 1):
        assert client.post(f"/v1/runs/{run_id}/steps", json={"step": step}).status_code == 200
    return run_id


def wait_for_recovery(client: httpx.Client, run_id: str, step: int) -> None:
    deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        response = client.post(f"/v1/runs/{run_id}/steps", json={"step": step})
        if response.status_code == 200:
            return
        assert_unavailable(response)
        time.sleep(0.2)
    raise AssertionError("the service did not recover once the database was back")


@pytest.fixture
def postgresql_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.restore()
    try:
        yield proxy
    finally:
        proxy.cut()


@pytest.mark.postgres
@pytest.mark.slow
def test_postgresql_cut_off_is_503_on_every_route_and_the_service_recovers_by_itself(
    server_factory: ServerPool, postgresql_proxy: TcpProxy
) -> None:
    direct_url = server_factory.databases.fresh_url("postgresql")
    proxied_url = make_url(direct_url).set(port=postgresql_proxy.port)
    server = server_factory(
        "postgresql", database_url=proxied_url.render_as_string(hide_password=False)
    )
    with httpx.Client(base_url=server.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
        run_id = start_run(client, steps=3)
        postgresql_proxy.cut()
        for method, path, body in database_routes(run_id, next_step=4):
            assert_unavailable(client.request(method, path, json=body))
        assert_unavailable(client.get("/readyz"))
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert 'lrkeeper_database_errors_total{kind="unavailable"}' in metrics.text
        assert "lrkeeper_stale_runs" not in metrics.text  # not a guess while it is away
        assert client.get("/v1/scheduler-types").status_code == 200
        preview = {"scheduler": SCHEDULER, "param_groups": GROUPS, "steps": 3}
        assert client.post("/v1/preview", json=preview).status_code == 200

        postgresql_proxy.restore()
        wait_for_recovery(client, run_id, step=4)
        assert client.get("/readyz").status_code == 200
        history = client.get(f"/v1/runs/{run_id}/history").json()["items"]
        assert [item["step"] for item in history] == [0, 1, 2, 3, 4]
        assert [item["lr"] for item in history] == [[0.1], [0.1], [0.05], [0.05], [0.025]]


@pytest.mark.slow
def test_sqlite_locked_by_another_process_is_503_for_writes_and_recovers(
    server_factory: ServerPool,
) -> None:
    server = server_factory("sqlite")
    path = make_url(server.database_url).database
    assert path is not None
    with httpx.Client(base_url=server.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
        run_id = start_run(client, steps=1)
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # in WAL: every writer waits, readers go on
            for method, path_, body in database_routes(run_id, next_step=2):
                response = client.request(method, path_, json=body)
                if method == "GET":
                    assert response.status_code < 500, response.text  # WAL: reads go on
                else:
                    assert_unavailable(response)
            assert client.get(f"/v1/runs/{run_id}").json()["step"] == 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for_recovery(client, run_id, step=2)
        assert client.get(f"/v1/runs/{run_id}/lr").json() == {"step": 2, "lr": [0.05]}


@pytest.mark.slow
def test_sqlite_on_a_full_disk_is_503_for_writes_and_recovers_when_space_returns(
    server_factory: ServerPool,
) -> None:
    """A full disk, simulated without privileges: the server process's file-size limit
    (RLIMIT_FSIZE) is lowered below its database's size, so every write that extends a
    file fails as on a full disk (Python ignores SIGXFSZ, so the write just fails)."""
    server = server_factory("sqlite")
    assert server.process is not None
    with httpx.Client(base_url=server.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
        run_id = start_run(client, steps=3)
        resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            for method, path, body in database_routes(run_id, next_step=4):
                response = client.request(method, path, json=body)
                if method == "GET":
                    assert response.status_code < 500, response.text  # reads write nothing
                else:
                    assert_unavailable(response)
            assert client.get(f"/v1/runs/{run_id}").json()["step"] == 3
        finally:
            unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, unlimited)
        wait_for_recovery(client, run_id, step=4)
        history = client.get(f"/v1/runs/{run_id}/history").json()["items"]
        assert [item["step"] for item in history] == [0, 1, 2, 3, 4]
