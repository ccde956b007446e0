"""The service SIGKILLed while 16 worker processes report steps: nothing acknowledged is lost.

16 ranks (separate processes, plain httpx) report every step of one ReduceLROnPlateau
run, each with the same metric for a step (as ranks do after an all-reduce), retrying
connection failures and 503s as the client library does. Meanwhile the service, with
one worker process or two, is SIGKILLed at random moments and started again on the
same database. Afterwards:

- every answer a rank was given (a 200: acknowledged) is in the history, unchanged;
- the history holds steps 0..N exactly once, nothing superseded;
- the stored run (lr, plateau counters) equals a replay of that history: the same
  config previewed with the recorded metrics gives the same lrs and the same state.

Each test writes what it survived to the reliability summary (tests/conftest.py).
"""

import json
import random
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from service import schedules
from service.schedules.codec import encode_floats
from tests.conftest import Backend, ReliabilityLog, ServerPool

WORKERS = 16
STEPS = 100
SCHEDULER = {
    "type": "ReduceLROnPlateau",
    "params": {"patience": 2, "factor": 0.5, "cooldown": 1},
    "monitor": "val_loss",
}
GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.9}]
RANKS_DEADLINE_SECONDS = 600


def metric_for(step: int) -> float:
    """Falls, then plateaus and wobbles: several reductions and cooldowns."""
    return 1.0 / step if step < 15 else 0.07 + 0.01 * ((step * 7) % 3)


# One rank as its own process: reports steps 1..N in order, retrying what the client
# library retries (connection errors, 503) until a deadline, and prints every
# acknowledged answer. It never gives up on a step: a 409 or 4xx is a failure.
RANK_SCRIPT = """
import json, sys, time
import httpx
base_urls, run_id, worker = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
steps, metrics = int(sys.argv[4]), json.loads(sys.argv[5])
answers, failures, retries = {}, [], 0
deadline = time.monotonic() + 500
with httpx.Client(timeout=20) as client:
    for step in range(1, steps + 1):
        metric = {"val_loss": metrics[step - 1]}
        body = {"step": step, "worker": f"rank-{worker}", "metrics": metric}
        while True:
            url = f"{base_urls[(step + int(worker)) % len(base_urls)]}/v1/runs/{run_id}/steps"
            try:
                response = client.post(url, json=body)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                answers[step] = response.json()
                break
            if response is not None and response.status_code != 503:
                failures.append(f"step {step}: {response.status_code} {response.text}")
                break
            retries += 1
            if time.monotonic() > deadline:
                failures.append(f"step {step}: gave up")
                break
            time.sleep(0.05)
print(json.dumps({"answers": answers, "failures": failures, "retries": retries}), flush=True)
"""


def launch_ranks(base_urls: list[str], run_id: str, workers: int) -> list[subprocess.Popen[str]]:
    metrics = [metric_for(step) for step in range(1, STEPS + 1)]
    return [
        subprocess.Popen(
            [
                *(sys.executable, "-c", RANK_SCRIPT, json.dumps(base_urls), run_id),
                *(str(worker), str(STEPS), json.dumps(metrics)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for worker in range(workers)
    ]


def collect(ranks: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    try:
        outputs = [rank.communicate(timeout=RANKS_DEADLINE_SECONDS)[0] for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
                rank.wait()
    results = [json.loads(output) for output in outputs]
    assert [failure for result in results for failure in result["failures"]] == []
    return results


def check_nothing_acknowledged_was_lost(
    base_url: str, run_id: str, results: list[dict[str, Any]]
) -> int:
    """The assertions of the module docstring; returns the number of acknowledged answers."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        history = client.get(
            f"/v1/runs/{run_id}/history", params={"include_superseded": "true", "limit": 1000}
        ).json()["items"]
        run = client.get(f"/v1/runs/{run_id}").json()
    assert [row["step"] for row in history] == list(range(STEPS + 1))
    assert not any(row["superseded"] for row in history)
    acknowledged = 0
    for result in results:
        for step, answer in result["answers"].items():
            assert answer["lr"] == history[int(step)]["lr"], f"step {step} changed after its 200"
            acknowledged += 1
    metrics = [row["metrics"]["val_loss"] for row in history[1:]]
    assert metrics == [metric_for(step) for step in range(1, STEPS + 1)]
    replay = schedules.build(schedules.normalize_config(dict(SCHEDULER)), GROUPS)
    replayed_lrs = [replay.outcome().lr]
    for metric in metrics:
        replayed_lrs.append(replay.step({"val_loss": metric}).lr)
    assert [row["lr"] for row in history] == replayed_lrs
    assert run["lr"] == replayed_lrs[-1]
    assert run["state"] == encode_floats(replay.state())
    return acknowledged


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "workers"),
    [
        pytest.param("sqlite", 1, id="sqlite"),
        pytest.param("sqlite", 2, id="sqlite-workers-2"),
        pytest.param("postgresql", 1, id="postgresql", marks=pytest.mark.postgres),
        pytest.param("postgresql", 2, id="postgresql-workers-2", marks=pytest.mark.postgres),
    ],
)
def test_service_sigkilled_under_sixteen_ranks_loses_no_acknowledged_step(
    server_factory: ServerPool, backend: Backend, workers: int, reliability: ReliabilityLog
) -> None:
    server = server_factory(backend, workers=workers)
    run_id = f"fault-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        created = client.put(
            f"/v1/runs/{run_id}", json={"scheduler": SCHEDULER, "param_groups": GROUPS}
        )
        assert created.status_code == 201, created.text
    ranks = launch_ranks([server.base_url], run_id, WORKERS)
    killed_at: list[int] = []
    chooser = random.Random(run_id)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        while len(killed_at) < 3:
            step = client.get(f"/v1/runs/{run_id}").json()["step"]
            if step >= STEPS:
                break
            if step < 5:  # the ranks are still starting
                time.sleep(0.05)
                continue
            server.kill()
            killed_at.append(step)
            server.start()
            time.sleep(chooser.uniform(0.2, 1.0))
    results = collect(ranks)
    assert killed_at and killed_at[0] < STEPS, "the service must die mid-run"
    results = collect(ranks)
    acknowledged = check_nothing_acknowledged_was_lost(server.base_url, run_id, results)
    reliability.record(
        f"SIGKILL under {WORKERS} ranks ({backend}, --workers {workers})",
        faults=len(killed_at),
        acknowledged=acknowledged,
        retries=sum(result["retries"] for result in results),
        lost=0,
    )
