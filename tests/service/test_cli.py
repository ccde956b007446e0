"""The ``lrkeeper`` command: migrating, serving and stopping cleanly, reading runs over HTTP."""

import csv
import importlib.metadata
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import httpx
import pytest
from PIL import Image

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
    assert header.split() == ["run_id", "status", "step", "lr", "updated"]
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


# -- the client commands, on SQLite only: their subject is the command, not the storage --


def service_csv(server: LiveServer, run_id: str) -> str:
    answer = httpx.get(
        f"{server.base_url}/v1/runs/{run_id}/history",
        params={"format": "csv", "limit": 10000},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.text


def test_version_prints_the_distribution_version() -> None:
    completed = lrkeeper("--version")
    assert completed.returncode == 0
    assert completed.stdout.strip() == f"lrkeeper {importlib.metadata.version('lrkeeper')}"


def test_runs_lists_newest_first_with_stale_runs_and_relative_times(
    server_factory: ServerPool,
) -> None:
    server = server_factory("sqlite", environment={"LRKEEPER_STALE_AFTER": "0.001"})
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    for suffix in ("old", "new"):
        create_run_with_steps(server, f"{prefix}-{suffix}", steps=1)

    completed = lrkeeper("runs", "--url", server.base_url, "--prefix", prefix)

    assert completed.returncode == 0, completed.stderr
    _, *rows = completed.stdout.splitlines()
    assert [row.split()[0] for row in rows] == [f"{prefix}-new", f"{prefix}-old"]
    for row in rows:
        _, status, step, lr, *updated = row.split()
        assert (status, step, lr) == ("stale", "1", "0.1,0.01")
        assert updated[-1] == "ago"
    stale = lrkeeper("runs", "--url", server.base_url, "--status", "stale", "--prefix", prefix)
    assert len(stale.stdout.splitlines()) == 3


def test_history_csv_is_the_services_own_csv(sqlite_server: LiveServer) -> None:
    run_id = f"cli-{uuid.uuid4().hex[:10]}"
    create_run_with_steps(sqlite_server, run_id, steps=5)
    completed = lrkeeper("history", run_id, "--url", sqlite_server.base_url, "--csv")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == service_csv(sqlite_server, run_id)
    assert completed.stderr == ""  # no progress when stderr is not a terminal


def create_long_run(server: LiveServer, steps: int) -> str:
    """A run of ``steps`` steps without metrics (one catch-up report), one group."""
    run_id = f"cli-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        created = http.put(
            f"/v1/runs/{run_id}",
            json={"scheduler": {"type": "ExponentialLR", "params": {"gamma": 0.999}},
                  "param_groups": [{"lr": 0.1}]},
        )  # fmt: skip
        assert created.status_code == 201
        assert http.post(f"/v1/runs/{run_id}/steps", json={"step": steps}).status_code == 200
    return run_id


def test_a_long_history_csv_follows_every_page_and_stays_the_services_csv(
    sqlite_server: LiveServer,
) -> None:
    run_id = create_long_run(sqlite_server, 2500)
    completed = lrkeeper("history", run_id, "--url", sqlite_server.base_url, "--csv")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == service_csv(sqlite_server, run_id)
    assert len(completed.stdout.splitlines()) == 1 + 2501


def test_history_csv_into_a_pipe_closed_early_exits_quietly(sqlite_server: LiveServer) -> None:
    run_id = create_long_run(sqlite_server, 20000)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LRKEEPER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "history", run_id, "--csv",
         "--url", sqlite_server.base_url],
        cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    first_lines = [process.stdout.readline() for _ in range(3)]  # what `| head -3` reads
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert first_lines[0].startswith(b"step,lr_0,")
    assert stderr == ""


@pytest.mark.parametrize("image", ["svg", "png"])
def test_history_chart_writes_the_services_image(
    sqlite_server: LiveServer, tmp_path: Path, image: str
) -> None:
    run_id = f"cli-{uuid.uuid4().hex[:10]}"
    create_run_with_steps(sqlite_server, run_id, steps=4)
    out = tmp_path / f"chart.{image}"
    completed = lrkeeper(
        "history", run_id, "--url", sqlite_server.base_url, "--chart", str(out),
        "--scale", "log", "--metrics", "loss",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert_image(out.read_bytes(), image)
    if image == "svg":
        assert 'id="metric-loss"' in out.read_text()


def assert_image(content: bytes, image: str) -> None:
    if image == "png":
        assert content.startswith(b"\x89PNG\r\n\x1a\n")
        assert statistics.pvariance(Image.open(io.BytesIO(content)).convert("L").tobytes()) > 100
    else:
        svg = ElementTree.fromstring(content)
        assert svg.find(".//*[@id='lr-group-0']") is not None


def test_history_table_has_a_row_per_step(sqlite_server: LiveServer) -> None:
    run_id = f"cli-{uuid.uuid4().hex[:10]}"
    create_run_with_steps(sqlite_server, run_id, steps=3)
    completed = lrkeeper("history", run_id, "--url", sqlite_server.base_url)
    assert completed.returncode == 0, completed.stderr
    header, *rows = completed.stdout.splitlines()
    assert header.split()[:2] == ["step", "lr"]
    assert [row.split()[:2] for row in rows] == [
        ["0", "0.1,0.01"], ["1", "0.1,0.01"], ["2", "0.05,0.005"], ["3", "0.05,0.005"],
    ]  # fmt: skip
    assert "loss=0.333333" in rows[3]


ONE_CYCLE = {"type": "OneCycleLR", "params": {"max_lr": 0.5, "total_steps": 10}}


def test_preview_prints_lr_and_cycled_momentum_per_step(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    config = tmp_path / "one-cycle.json"
    config.write_text(json.dumps(ONE_CYCLE))
    completed = lrkeeper(
        "preview", str(config), "--steps", "4", "--lr", "0.1", "--lr", "0.01",
        "--url", sqlite_server.base_url,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    header, *rows = completed.stdout.splitlines()
    assert header.split() == ["step", "lr_0", "lr_1", "momentum_0", "momentum_1"]
    expected = httpx.post(
        f"{sqlite_server.base_url}/v1/preview",
        json={"scheduler": ONE_CYCLE, "param_groups": [{"lr": 0.1, "momentum": 0.9}] * 2,
              "steps": 4},
    ).json()  # fmt: skip
    assert [float(cell) for cell in rows[2].split()[1:]] == pytest.approx(
        expected["lr"][2] + expected["momentum"][2], rel=1e-5
    )
    assert len(rows) == 5


@pytest.mark.parametrize("image", ["svg", "png"])
def test_preview_chart_writes_the_image_from_a_whole_preview_body(
    sqlite_server: LiveServer, tmp_path: Path, image: str
) -> None:
    config = tmp_path / "body.json"
    config.write_text(
        json.dumps({"scheduler": ONE_CYCLE, "param_groups": [{"lr": 0.1, "betas": [0.9, 0.99]}]})
    )
    out = tmp_path / f"preview.{image}"
    completed = lrkeeper(
        "preview", str(config), "--steps", "10", "--chart", str(out),
        "--url", sqlite_server.base_url,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert_image(out.read_bytes(), image)


def test_set_lr_rewind_and_finish_change_the_run(sqlite_server: LiveServer) -> None:
    run_id = f"cli-{uuid.uuid4().hex[:10]}"
    create_run_with_steps(sqlite_server, run_id, steps=4)
    url = ("--url", sqlite_server.base_url)

    set_lr = lrkeeper("set-lr", run_id, "0.02", "--reason", "loss spiked", *url)
    assert set_lr.returncode == 0, set_lr.stderr
    assert "lr 0.02,0.02" in set_lr.stdout
    rewound = lrkeeper("rewind", run_id, "2", *url)
    assert rewound.returncode == 0, rewound.stderr
    assert "at step 2" in rewound.stdout
    finished = lrkeeper("finish", run_id, *url)
    assert finished.returncode == 0, finished.stderr

    with httpx.Client(base_url=sqlite_server.base_url, timeout=30) as http:
        run = http.get(f"/v1/runs/{run_id}").json()
        events = http.get(f"/v1/runs/{run_id}/events").json()["items"]
    assert (run["status"], run["step"]) == ("finished", 2)
    lr_set = next(event for event in events if event["kind"] == "lr_set")
    assert lr_set["detail"]["to"] == [0.02, 0.02]
    assert "loss spiked" in json.dumps(lr_set["detail"])


def test_a_refused_write_is_one_line_with_the_method_url_status_and_detail(
    sqlite_server: LiveServer,
) -> None:
    run_id = f"cli-{uuid.uuid4().hex[:10]}"
    create_run_with_steps(sqlite_server, run_id, steps=2)
    completed = lrkeeper("rewind", run_id, "7", "--url", sqlite_server.base_url)
    assert completed.returncode == 1
    assert completed.stderr.count("\n") == 1, completed.stderr
    assert f"POST {sqlite_server.base_url}/v1/runs/{run_id}/rewind: 4" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_an_unreachable_service_is_one_line_naming_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    completed = lrkeeper("finish", "some-run", "--url", url)
    assert completed.returncode == 1
    assert completed.stderr.count("\n") == 1, completed.stderr
    assert f"{url}/v1/runs/some-run" in completed.stderr


def test_a_chart_file_of_another_kind_is_refused_before_any_call(tmp_path: Path) -> None:
    completed = lrkeeper(
        "history", "some-run", "--chart", str(tmp_path / "chart.jpg"),
        "--url", f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert completed.returncode == 1
    assert ".svg or .png" in completed.stderr


def create_range_test(server: LiveServer, steps: int) -> str:
    """A range test from 1e-4 to 1 over 40 steps whose loss falls until lr 0.1, then rises."""
    run_id = f"cli-range-{uuid.uuid4().hex[:10]}"
    scheduler = {
        "type": "LRRangeTest",
        "params": {"start_lr": 1e-4, "end_lr": 1.0, "num_steps": 40},
    }
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        created = http.put(
            f"/v1/runs/{run_id}", json={"scheduler": scheduler, "param_groups": [{"lr": 0.1}]}
        )
        assert created.status_code == 201, created.text
        lr = 1e-4
        for step in range(1, steps + 1):
            loss = 1.0 - 0.2 * math.log10(lr) if lr < 0.1 else 1.2 + (lr - 0.1) * 100
            answer = http.post(
                f"/v1/runs/{run_id}/steps", json={"step": step, "metrics": {"loss": loss}}
            )
            lr = answer.json()["lr"][0]
    return run_id


def test_lr_suggestion_prints_every_method_the_chosen_one_first(
    sqlite_server: LiveServer,
) -> None:
    run_id = create_range_test(sqlite_server, steps=40)
    completed = lrkeeper(
        "lr-suggestion", run_id, "--method", "valley", "--url", sqlite_server.base_url
    )
    assert completed.returncode == 0, completed.stderr
    header, *rows = completed.stdout.splitlines()
    assert header.split() == ["method", "lr"]
    names = [row.split()[0] for row in rows]
    assert names == ["valley", "steepest", "minimum", "base_lr", "max_lr"]
    assert rows[0].split()[2] == "chosen"
    with httpx.Client(base_url=sqlite_server.base_url) as http:
        answer = http.get(f"/v1/runs/{run_id}/lr-suggestion").json()
    assert float(rows[0].split()[1]) == pytest.approx(answer["suggestions"]["valley"], rel=1e-5)


@pytest.mark.parametrize("image", ["svg", "png"])
def test_lr_suggestion_chart_writes_the_services_picture(
    sqlite_server: LiveServer, tmp_path: Path, image: str
) -> None:
    run_id = create_range_test(sqlite_server, steps=20)
    out = tmp_path / f"suggestion.{image}"
    completed = lrkeeper(
        "lr-suggestion", run_id, "--url", sqlite_server.base_url, "--chart", str(out)
    )
    assert completed.returncode == 0, completed.stderr
    content = out.read_bytes()
    if image == "png":
        assert content.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        svg = ElementTree.fromstring(content)
        for gid in ("loss-curve", "suggestion-steepest", "suggestion-minimum", "suggestion-valley"):
            assert svg.find(f".//*[@id='{gid}']") is not None, gid


def test_lr_suggestion_before_ten_steps_fails_with_the_problem_detail(
    sqlite_server: LiveServer,
) -> None:
    run_id = create_range_test(sqlite_server, steps=3)
    completed = lrkeeper("lr-suggestion", run_id, "--url", sqlite_server.base_url)
    assert completed.returncode == 1
    assert "10 steps" in completed.stderr
