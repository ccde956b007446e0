"""Many ranks, several service processes, one run: every step recorded once, same answer for all.

16 or 32 worker processes (real httpx, no shared state) report the steps of one run,
each in its own order, at the same moment, against

- two service replicas on one PostgreSQL database (32 ranks), and
- one SQLite file served by ``lrkeeper serve --workers 2`` (16 ranks).

Afterwards the history must hold every step exactly once (no gap, no duplicate,
nothing superseded), with torch's lr, and every worker must have been answered
the same lr and events for every step.
"""

import json
import random
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import ReliabilityLog, ServerPool
from tests.schedules.torch_oracle import run_in_torch

STEPS = 40
# Warm restarts every 4 steps: events travel with the answers, and replays must repeat them.
SCHEDULER = {"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 4, "eta_min": 0.001}}
PARAM_GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.9}]
RANKS_DEADLINE_SECONDS = 600


def report_order(worker: int) -> list[int]:
    """A different order per worker: ascending, pairs swapped, shuffled chunks, or shuffled."""
    steps = list(range(1, STEPS + 1))
    shuffler = random.Random(worker)
    kind = worker % 4
    if kind == 1:
        for index in range(0, STEPS - 1, 2):
            steps[index], steps[index + 1] = steps[index + 1], steps[index]
    elif kind == 2:
        chunks = [steps[index : index + 5] for index in range(0, STEPS, 5)]
        for chunk in chunks:
            shuffler.shuffle(chunk)
        steps = [step for chunk in chunks for step in chunk]
    elif kind == 3:
        shuffler.shuffle(steps)
    return steps


# One rank, as its own process that imports nothing but httpx (fast to start): says
# "ready", waits for "go" on stdin so all ranks start together, reports its steps in
# the order given, and prints every answer (or failure) as one JSON document.
RANK_SCRIPT = """
import json, sys
import httpx
base_url, run_id, worker, order = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
answers, failures = {}, []
with httpx.Client(base_url=base_url, timeout=60) as client:
    print("ready", flush=True)
    sys.stdin.readline()
    for step in order:
        response = client.post(
            f"/v1/runs/{run_id}/steps", json={"step": step, "worker": f"rank-{worker}"}
        )
        if response.status_code == 200:
            answers[step] = response.json()
        else:
            failures.append(f"step {step}: {response.status_code} {response.text}")
print(json.dumps({"answers": answers, "failures": failures}), flush=True)
"""


def run_ranks(base_urls: list[str], workers: int) -> int:
    """Start ``workers`` ranks on ``base_urls`` (round robin), release them at once, collect;
    returns how many answers the ranks were given."""
    run_id = f"conc-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=base_urls[0], timeout=60) as client:
        created = client.put(
            f"/v1/runs/{run_id}", json={"scheduler": SCHEDULER, "param_groups": PARAM_GROUPS}
        )
        assert created.status_code == 201, created.text
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RANK_SCRIPT,
                base_urls[worker % len(base_urls)],
                run_id,
                str(worker),
                json.dumps(report_order(worker)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for worker in range(workers)
    ]
    try:
        for rank in ranks:
            assert rank.stdout is not None
            assert rank.stdout.readline().strip() == "ready"
        for rank in ranks:
            assert rank.stdin is not None
            rank.stdin.write("go\n")
            rank.stdin.flush()
        outputs = [rank.communicate(timeout=RANKS_DEADLINE_SECONDS)[0] for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
                rank.wait()
    assert [rank.returncode for rank in ranks] == [0] * workers
    results = [json.loads(output) for output in outputs]
    assert [failure for result in results for failure in result["failures"]] == []
    check_run(base_urls[0], run_id, [result["answers"] for result in results])
    return sum(len(result["answers"]) for result in results)


def check_run(base_url: str, run_id: str, answers_by_rank: list[dict[str, Any]]) -> None:
    """Same answer for every rank, torch's lr, and each step recorded exactly once."""
    in_torch = run_in_torch(SCHEDULER, PARAM_GROUPS, steps=STEPS)
    for step in range(1, STEPS + 1):
        answered = [answers[str(step)] for answers in answers_by_rank]
        assert {answer["step"] for answer in answered} == {step}
        assert all(answer["lr"] == in_torch.lr[step] for answer in answered), step
        assert all(answer["events"] == answered[0]["events"] for answer in answered), step
        # At most one report recorded the step itself (none when a catch-up did).
        assert sum(not answer["replayed"] for answer in answered) <= 1, step
    with httpx.Client(base_url=base_url, timeout=60) as client:
        rows = client.get(
            f"/v1/runs/{run_id}/history", params={"include_superseded": "true"}
        ).json()["items"]
        run = client.get(f"/v1/runs/{run_id}").json()
        events = client.get(f"/v1/runs/{run_id}/events").json()["items"]
    assert [row["step"] for row in rows] == list(range(STEPS + 1))
    assert not any(row["superseded"] for row in rows)
    assert [row["lr"] for row in rows] == in_torch.lr
    assert run["step"] == STEPS
    assert run["lr"] == in_torch.lr[STEPS]
    assert [event["step"] for event in events] == list(range(4, STEPS + 1, 4))


@pytest.mark.slow
@pytest.mark.postgres
def test_thirty_two_ranks_on_two_replicas_of_one_postgresql_database_agree(
    server_factory: ServerPool, reliability: ReliabilityLog
) -> None:
    first = server_factory("postgresql")
    second = server_factory("postgresql", database_url=first.database_url)
    answers = run_ranks([first.base_url, second.base_url], workers=32)
    reliability.record(
        "32 ranks on two PostgreSQL replicas, one run", answers=answers, gaps=0, duplicates=0
    )


@pytest.mark.slow
def test_sixteen_ranks_on_one_sqlite_file_served_by_two_workers_agree(
    server_factory: ServerPool,
) -> None:
    server = server_factory("sqlite", workers=2)
    run_ranks([server.base_url], workers=16)
