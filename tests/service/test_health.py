"""Liveness, readiness and metrics, as an orchestrator and a scraper see them."""

import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import (
    BACKENDS,
    PROJECT_ROOT,
    STARTUP_DEADLINE_SECONDS,
    Backend,
    LiveServer,
    ServerPool,
)


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


def new_run(http: httpx.Client, scheduler: dict[str, object]) -> str:
    run_id = f"metrics-{uuid.uuid4().hex}"
    created = http.put(
        f"/v1/runs/{run_id}", json={"scheduler": scheduler, "param_groups": [{"lr": 1}]}
    )
    assert created.status_code == 201, created.text
    return run_id


def test_metrics_count_replayed_step_reports(client: httpx.Client) -> None:
    run_id = new_run(client, {"type": "StepLR", "params": {"step_size": 1}})
    before = metric_value(client, "lrkeeper_step_replays_total")

    for step in (1, 2, 1, 2, 2):
        assert client.post(f"/v1/runs/{run_id}/steps", json={"step": step}).status_code == 200

    assert metric_value(client, "lrkeeper_step_replays_total") == before + 3


def test_metrics_count_each_plateau_reduction_once_however_often_it_is_replayed(
    client: httpx.Client,
) -> None:
    run_id = new_run(client, {"type": "ReduceLROnPlateau", "params": {"patience": 0}})
    before = metric_value(client, "lrkeeper_plateau_reductions_total")

    losses = {1: 1.0, 2: 2.0, 3: 3.0}  # no improvement after step 1: a reduction at 2 and 3
    for step in (1, 2, 3, 2, 3, 3):
        answer = client.post(
            f"/v1/runs/{run_id}/steps", json={"step": step, "metrics": {"val_loss": losses[step]}}
        )
        assert answer.status_code == 200, answer.text

    assert metric_value(client, "lrkeeper_plateau_reductions_total") == before + 2


def test_metrics_expose_database_errors_by_kind(client: httpx.Client) -> None:
    text = client.get("/metrics").text

    assert "# TYPE lrkeeper_database_errors_total counter" in text


def test_with_two_workers_metrics_sum_the_answers_of_both(server_factory: ServerPool) -> None:
    server = server_factory("sqlite", workers=2, environment={"LRKEEPER_LOG_FORMAT": "json"})
    series = (
        'lrkeeper_http_requests_total{method="POST",route="/v1/runs/{run_id}/steps",status="200"}'
    )
    # A fresh connection for every request, so the kernel hands them to either worker.
    one_shot = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=server.base_url, timeout=60, limits=one_shot) as http:
        assert len(started_workers(server, 2)) == 2
        run_id = new_run(http, {"type": "StepLR", "params": {"step_size": 1}})
        steps = list(range(1, 65))
        with ThreadPoolExecutor(max_workers=8) as senders:
            statuses = list(
                senders.map(
                    lambda step: (
                        http.post(f"/v1/runs/{run_id}/steps", json={"step": step}).status_code
                    ),
                    steps,
                )
            )
        assert statuses == [200] * len(steps)

        scraped = {metric_value(http, series) for _ in range(12)}

    assert scraped == {float(len(steps))}
    assert len(step_report_pids(server, run_id, len(steps))) == 2


def json_log_lines(server: LiveServer) -> list[dict[str, object]]:
    lines = server.log.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def started_workers(server: LiveServer, count: int) -> set[object]:
    """The pids of the workers that finished starting, once ``count`` have (or at a deadline).

    The server is ready when its first worker is; the others may still be importing.
    """
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while True:
        pids = {
            line["pid"]
            for line in json_log_lines(server)
            if line["message"] == "Application startup complete."
        }
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def step_report_pids(server: LiveServer, run_id: str, count: int) -> set[object]:
    """The processes whose access lines answered ``count`` step reports of ``run_id``."""
    deadline = time.monotonic() + 30
    while True:
        reports = [
            line
            for line in json_log_lines(server)
            if line.get("run_id") == run_id and line.get("route") == "/v1/runs/{run_id}/steps"
        ]
        if len(reports) >= count or time.monotonic() > deadline:
            return {line["pid"] for line in reports}
        time.sleep(0.05)
