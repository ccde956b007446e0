"""The ``lrkeeper`` command: migrating, serving and stopping cleanly, reading runs over HTTP."""

import csv
import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from service.db import open_database, schema_is_current
from tests.conftest import (
    ACCESS_TOKENS,
    BACKENDS,
    PROJECT_ROOT,
    Backend,
    DatabaseProvider,
    LiveServer,
    ServerPool,
    free_port,
)


def lrkeeper(
    *arguments: str, database_url: str | None = None, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LRKEEPER_")}
    if database_url is not None:
        environment["LRKEEPER_DATABASE_URL"] = database_url
    if token is not None:
        environment["LRKEEPER_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_db_upgrade_brings_a_fresh_database_to_the_latest_migration(
    backend: Backend, database_provider: DatabaseProvider
) -> None:
    url = database_provider.fresh_url(backend)
    completed = lrkeeper("db", "upgrade", database_url=url)
    assert completed.returncode == 0, completed.stderr
    database = open_database(url)
    try:
        assert schema_is_current(database.read_engine)
    finally:
        database.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_serve_migrates_then_exits_zero_on_sigterm(
    backend: Backend, server_factory: ServerPool
) -> None:
    server = server_factory(backend)
    assert httpx.get(f"{server.base_url}/readyz").status_code == 200
    assert server.stop() == 0


def test_serve_with_two_workers_exits_zero_on_sigterm_and_leaves_no_worker(
    server_factory: ServerPool,
) -> None:
    server = server_factory("sqlite", workers=2)
    assert httpx.get(f"{server.base_url}/readyz").status_code == 200
    assert server.process is not None
    process_group = server.process.pid
    assert server.stop() == 0
    # multiprocessing's resource tracker leaves on its own once the supervisor is gone.
    deadline = time.monotonic() + 30
    while process_group_exists(process_group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_group_exists(process_group)


def process_group_exists(process_group: int) -> bool:
    try:
        os.killpg(process_group, 0)
    except ProcessLookupError:
        return False
    return True


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "lrkeeper"
    completed = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert completed.returncode == 0
    for command in ("serve", "db", "runs", "history"):
        assert command in completed.stdout


def create_run_with_steps(live_server: LiveServer, run_id: str, steps: int) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=30) as http:
        created = http.put(
            f"/v1/runs/{run_id}",
            json={
                "scheduler": {"type": "StepLR", "params": {"step_size": 2, "gamma": 0.5}},
                "param_groups": [{"lr": 0.1}, {"lr": 0.01}],
            },
        )
        assert created.status_code == 201, created.text
        for step in range(1, steps + 1):
            reported = http.post(
                f"/v1/runs/{run_id}/steps", json={"step": step, "metrics": {"loss": 1.0 / step}}
            )
            assert reported.status_code == 200, reported.text


def test_runs_lists_the_runs_with_a_prefix(live_server: LiveServer) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    create_run_with_steps(live_server, f"{prefix}-a", steps=3)
    create_run_with_steps(live_server, f"{prefix}-b", steps=1)

    completed = lrkeeper("runs", "--url", live_server.base_url, "--prefix", prefix)

    assert completed.returncode == 0, completed.stderr
    header, *rows = completed.stdout.splitlines()
    assert header.split() == ["run_id", "status", "step", "lr", "updated_at"]
    listed = {row.split()[0]: row.split()[1:3] for row in rows}
    assert listed == {f"{prefix}-a": ["running", "3"], f"{prefix}-b": ["running", "1"]}


def test_history_as_csv_has_one_row_per_step_from_zero(live_server: LiveServer) -> None:
    run_id = f"cli-{uuid.uuid4().hex[:8]}"
    create_run_with_steps(live_server, run_id, steps=3)

    completed = lrkeeper("history", run_id, "--url", live_server.base_url, "--csv")

    assert completed.returncode == 0, completed.stderr
    rows = list(csv.DictReader(io.StringIO(completed.stdout)))
    assert [row["step"] for row in rows] == ["0", "1", "2", "3"]
    assert [float(row["lr_0"]) for row in rows] == [0.1, 0.1, 0.05, 0.05]
    assert rows[3]["loss"] == str(1.0 / 3)
    assert rows[0]["loss"] == ""


def test_history_of_an_unknown_run_fails_with_the_problem_detail(live_server: LiveServer) -> None:
    completed = lrkeeper("history", f"missing-{uuid.uuid4().hex}", "--url", live_server.base_url)
    assert completed.returncode == 1
    assert "404" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_runs_without_a_service_says_it_cannot_reach_it() -> None:
    completed = lrkeeper("runs", "--url", f"http://127.0.0.1:{free_port()}")
    assert completed.returncode == 1
    assert "cannot reach the service" in completed.stderr


def test_runs_sends_lrkeeper_token(token_server: LiveServer) -> None:
    completed = lrkeeper("runs", "--url", token_server.base_url, token=ACCESS_TOKENS.read)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split()[:2] == ["run_id", "status"]


@pytest.mark.parametrize(("token", "status"), [(None, "401"), (ACCESS_TOKENS.wrong, "401")])
def test_a_refused_token_is_one_line_naming_the_url_and_a_failure(
    token_server: LiveServer, token: str | None, status: str
) -> None:
    completed = lrkeeper("history", "some-run", "--url", token_server.base_url, token=token)
    assert completed.returncode == 1
    assert completed.stderr.count("\n") == 1, completed.stderr
    assert f"GET {token_server.base_url}/v1/runs/some-run/history" in completed.stderr
    assert f": {status} " in completed.stderr
    assert ACCESS_TOKENS.wrong not in completed.stderr
