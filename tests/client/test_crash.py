"""Crashes on either side leave the schedule exact.

A worker SIGKILLed mid-run is replaced by a new process that constructs
RemoteLRScheduler for the same run and carries on; the service SIGKILLed and
restarted on the same port and database is ridden out by the worker's retries.
Either way the run's history, and every value either worker held, equals an
uninterrupted torch run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy.engine import make_url
from torch.optim import lr_scheduler

from client import LRKeeper
from tests.client.training import make_optimizer, tiny_model
from tests.conftest import LiveServer, ReliabilityLog, ServerPool
from tests.service.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.torch, pytest.mark.slow]

WORKER = Path(__file__).with_name("crash_worker.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOTAL_STEPS = 100
# Two momentum-cycling groups: lr and momentum both have to come back exactly.
CONFIG = {"type": "OneCycleLR", "params": {"max_lr": [0.1, 0.05], "total_steps": TOTAL_STEPS}}
# Generous: two shared CPUs; a hang fails the test instead of blocking the suite.
PROCESS_DEADLINE_SECONDS = 180
OUTAGE_SECONDS = 10


def torch_values() -> list[tuple[list[float], list[float]]]:
    """(lr, momentum) after steps 0..TOTAL_STEPS of an uninterrupted torch run."""
    optimizer = make_optimizer("sgd", tiny_model())
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=[0.1, 0.05], total_steps=TOTAL_STEPS)

    def now() -> tuple[list[float], list[float]]:
        groups = optimizer.param_groups
        return [g["lr"] for g in groups], [g["momentum"] for g in groups]

    values = [now()]
    for _ in range(TOTAL_STEPS):
        optimizer.step()
        scheduler.step()
        values.append(now())
    return values


def start_worker(base_url: str, run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, str(WORKER), "--url", base_url, "--run-id", run_id),
            *("--config", json.dumps(CONFIG), "--steps", str(TOTAL_STEPS), "--deadline", "120"),
        ],
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("LRKEEPER_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until_step(stream: IO[str], step: int) -> list[dict[str, Any]]:
    """The worker's lines up to and including the first that reports ``step`` or later."""
    lines = []
    for raw in stream:
        line = json.loads(raw)
        lines.append(line)
        if line.get("step", -1) >= step:
            return lines
    raise AssertionError(f"worker ended before step {step}: {lines[-3:]}")


def assert_matches_torch(lines: list[dict[str, Any]], expected: list[Any]) -> None:
    for line in lines:
        step = int(line["step"] if "step" in line else line["resumed_at"])
        assert (line["lr"], line["momentum"]) == expected[step], f"step {step}"


def assert_history_matches_torch(keeper: LRKeeper, run_id: str, expected: list[Any]) -> None:
    history = list(keeper.history(run_id, page_size=1000))
    assert [item.step for item in history] == list(range(TOTAL_STEPS + 1))
    assert [(item.lr, item.momentum) for item in history] == expected


def test_worker_killed_mid_run_is_resumed_by_a_new_process(
    keeper: LRKeeper, live_server: LiveServer, run_id: str
) -> None:
    expected = torch_values()
    first = start_worker(live_server.base_url, run_id)
    assert first.stdout is not None
    before_kill = read_until_step(first.stdout, 5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    # Whatever the killed worker printed after our read was still exact.
    before_kill += [json.loads(raw) for raw in first.stdout]
    first.stdout.close()
    assert first.stderr is not None
    first.stderr.close()
    killed_at = keeper.get_run(run_id).step
    assert 5 <= killed_at < TOTAL_STEPS, "the worker must die mid-run"

    second = start_worker(live_server.base_url, run_id)
    out, err = second.communicate(timeout=PROCESS_DEADLINE_SECONDS)
    assert second.returncode == 0, err
    after_restart = [json.loads(raw) for raw in out.splitlines()]

    assert after_restart[0]["resumed_at"] == killed_at
    assert_matches_torch(before_kill + after_restart, expected)
    assert after_restart[-1]["step"] == TOTAL_STEPS
    assert_history_matches_torch(keeper, run_id, expected)


def test_worker_rides_out_a_service_killed_and_restarted(
    server_factory: ServerPool, run_id: str
) -> None:
    expected = torch_values()
    server = server_factory("sqlite")
    worker = start_worker(server.base_url, run_id)
    assert worker.stdout is not None
    before_outage = read_until_step(worker.stdout, 5)

    server.kill()
    server.start()

    rest, err = worker.communicate(timeout=PROCESS_DEADLINE_SECONDS)
    assert worker.returncode == 0, err
    assert "retrying" in err, "the worker never noticed the outage: the test proved nothing"
    lines = before_outage + [json.loads(raw) for raw in rest.splitlines()]
    assert lines[-1]["step"] == TOTAL_STEPS
    assert_matches_torch(lines, expected)
    with LRKeeper(server.base_url) as keeper:
        assert_history_matches_torch(keeper, run_id, expected)


@pytest.mark.postgres
def test_training_loop_rides_out_a_ten_second_postgresql_outage_with_torchs_values(
    server_factory: ServerPool, run_id: str, reliability: ReliabilityLog
) -> None:
    """PostgreSQL cut off for 10 s mid-run (every connection reset, new ones refused): the
    service answers 503 with Retry-After, the client waits, and the run ends exact."""
    expected = torch_values()
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.restore()
    try:
        direct_url = server_factory.databases.fresh_url("postgresql")
        proxied = make_url(direct_url).set(port=proxy.port).render_as_string(hide_password=False)
        server = server_factory("postgresql", database_url=proxied)
        worker = start_worker(server.base_url, run_id)
        assert worker.stdout is not None
        before_outage = read_until_step(worker.stdout, 5)
        proxy.cut()
        time.sleep(OUTAGE_SECONDS)
        proxy.restore()
        rest, err = worker.communicate(timeout=PROCESS_DEADLINE_SECONDS)
        assert worker.returncode == 0, err
        assert "503" in err, "the worker never met the outage: the test proved nothing"
        lines = before_outage + [json.loads(raw) for raw in rest.splitlines()]
        assert lines[-1]["step"] == TOTAL_STEPS
        assert_matches_torch(lines, expected)
        with LRKeeper(server.base_url) as keeper:
            assert_history_matches_torch(keeper, run_id, expected)
    finally:
        proxy.cut()
    reliability.record(
        f"training loop through a {OUTAGE_SECONDS} s PostgreSQL outage",
        steps=TOTAL_STEPS,
        exact=True,
        lost=0,
    )
