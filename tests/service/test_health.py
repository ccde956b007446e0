"""Liveness, readiness and metrics, as an orchestrator and a scraper see them."""

import subprocess
import sys
import uuid

import httpx
import pytest

from tests.conftest import BACKENDS, PROJECT_ROOT, Backend, LiveServer, ServerPool


def test_healthz_says_ok(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_on_a_migrated_database(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def run_db_upgrade(server: LiveServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "db", "upgrade"],
        cwd=PROJECT_ROOT,
        env={"LRKEEPER_DATABASE_URL": server.database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_readyz_refuses_until_the_schema_is_migrated(
    backend: Backend, server_factory: ServerPool
) -> None:
    server = server_factory(backend, migrate=False)
    with httpx.Client(base_url=server.base_url) as http:
        before = http.get("/readyz")
        assert before.status_code == 503
        assert before.headers["content-type"] == "application/problem+json"
        assert before.json()["type"] == "urn:lrkeeper:problem:service-unavailable"
        assert "migration" in before.json()["detail"]
        assert http.get("/healthz").status_code == 200

        upgrade = run_db_upgrade(server)
        assert upgrade.returncode == 0, upgrade.stderr

        assert http.get("/readyz").status_code == 200


@pytest.mark.postgres
def test_readyz_refuses_while_the_database_is_unreachable(server_factory: ServerPool) -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:5432/lrkeeper_no_such_database"
    server = server_factory("postgresql", database_url=unreachable, migrate=False)
    response = httpx.get(f"{server.base_url}/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == "the database is unreachable"
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200


def metric_value(http: httpx.Client, series: str) -> float:
    """The current value of one series (name and labels) on /metrics; 0 before it exists."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.removeprefix(series + " "))
    return 0.0


def requests_counted(http: httpx.Client, route: str, status: int) -> float:
    return metric_value(
        http, f'lrkeeper_http_requests_total{{method="GET",route="{route}",status="{status}"}}'
    )


def test_metrics_are_prometheus_text_format_0_0_4(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    content_type = response.headers["content-type"].replace(" ", "")
    assert content_type.startswith("text/plain;version=0.0.4")
    assert "# TYPE lrkeeper_http_requests_total counter" in response.text


def test_metrics_count_requests_by_route_template_and_status(client: httpx.Client) -> None:
    before = requests_counted(client, "/healthz", 200)
    client.get("/healthz")
    client.get("/healthz")
    assert requests_counted(client, "/healthz", 200) == before + 2


def test_metrics_lump_unknown_paths_together(client: httpx.Client) -> None:
    before = requests_counted(client, "unmatched", 404)
    client.get("/no/such/path/a")
    client.get("/no/such/path/b")
    assert requests_counted(client, "unmatched", 404) == before + 2
    assert "/no/such/path" not in client.get("/metrics").text


def test_metrics_count_step_reports(client: httpx.Client) -> None:
    run_id = f"metrics-{uuid.uuid4().hex}"
    created = client.put(
        f"/v1/runs/{run_id}",
        json={
            "scheduler": {"type": "StepLR", "params": {"step_size": 1}},
            "param_groups": [{"lr": 1}],
        },
    )
    assert created.status_code == 201, created.text
    series = 'lrkeeper_step_reports_total{status="200"}'
    before = metric_value(client, series)
    for step in (1, 2, 1):
        assert client.post(f"/v1/runs/{run_id}/steps", json={"step": step}).status_code == 200
    assert metric_value(client, series) == before + 3
