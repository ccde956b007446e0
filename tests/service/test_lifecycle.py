"""A run's life: finished and failed runs take no new steps until reopened; a silent
running run reads as stale; OneCycleLR with pct_start=1.0 runs as torch accepts it."""

import re
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import ServerPool

STEP_LR = {"type": "StepLR", "params": {"step_size": 2, "gamma": 0.5}}
GROUPS = [{"lr": 0.1, "momentum": 0.9}]


def create_run(client: httpx.Client, scheduler: dict[str, Any] = STEP_LR) -> str:
    run_id = f"life-{uuid.uuid4().hex[:10]}"
    created = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": scheduler, "param_groups": GROUPS}
    )
    assert created.status_code == 201, created.text
    return run_id


def step(client: httpx.Client, run_id: str, number: int) -> httpx.Response:
    return client.post(f"/v1/runs/{run_id}/steps", json={"step": number})


def patch_status(client: httpx.Client, run_id: str, status: str) -> dict[str, Any]:
    response = client.patch(f"/v1/runs/{run_id}", json={"status": status})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("stopped", ["finished", "failed"])
def test_a_stopped_run_refuses_new_steps_replays_old_ones_and_reopens(
    client: httpx.Client, stopped: str
) -> None:
    run_id = create_run(client)
    first = step(client, run_id, 1).json()
    assert patch_status(client, run_id, stopped)["status"] == stopped

    refused = step(client, run_id, 2)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["type"].endswith("run-not-running")
    assert stopped in problem["detail"] and '"running"' in problem["detail"]
    assert client.get(f"/v1/runs/{run_id}").json()["step"] == 1
    assert step(client, run_id, 1).json() == {**first, "replayed": True}

    assert patch_status(client, run_id, "running")["status"] == "running"
    assert step(client, run_id, 2).json()["lr"] == [0.05]
    events = client.get(f"/v1/runs/{run_id}/events").json()["items"]
    assert [(event["kind"], event["step"], event["detail"]) for event in events] == [
        ("reopened", 1, {"from": stopped})
    ]


def test_patching_running_on_a_running_run_records_no_reopening(client: httpx.Client) -> None:
    run_id = create_run(client)
    patch_status(client, run_id, "running")
    assert client.get(f"/v1/runs/{run_id}/events").json()["items"] == []


def test_stale_cannot_be_set_by_hand(client: httpx.Client) -> None:
    run_id = create_run(client)
    response = client.patch(f"/v1/runs/{run_id}", json={"status": "stale"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "status"]


@pytest.mark.slow
def test_a_silent_running_run_reads_as_stale_until_its_next_step(
    server_factory: ServerPool,
) -> None:
    server = server_factory("sqlite", environment={"LRKEEPER_STALE_AFTER": "1.5"})
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        silent = create_run(client)  # never stepped: stale that long after its creation
        finished = create_run(client)
        patch_status(client, finished, "finished")
        time.sleep(2)
        active = create_run(client)

        def listed(status: str) -> set[str]:
            items = client.get("/v1/runs", params={"status": status}).json()["items"]
            assert {item["status"] for item in items} <= {status}
            return {item["run_id"] for item in items}

        assert client.get(f"/v1/runs/{silent}").json()["status"] == "stale"
        assert listed("stale") == {silent}
        assert listed("running") == {active}
        assert listed("finished") == {finished}
        row = re.search(rf'<tr data-run-id="{silent}">(.*?)</tr>', client.get("/").text, re.S)
        assert row is not None
        assert '<span class="status status-stale">stale</span>' in row.group(1)
        assert "lrkeeper_stale_runs 1.0" in client.get("/metrics").text

        assert step(client, silent, 1).status_code == 200
        assert client.get(f"/v1/runs/{silent}").json()["status"] == "running"
        assert listed("stale") == set()
        assert "lrkeeper_stale_runs 0.0" in client.get("/metrics").text


def test_one_cycle_with_pct_start_one_is_accepted_and_ends_a_step_early(
    client: httpx.Client,
) -> None:
    one_cycle = {
        "type": "OneCycleLR",
        "params": {"max_lr": 0.1, "total_steps": 5, "pct_start": 1.0},
    }
    run_id = create_run(client, one_cycle)
    assert step(client, run_id, 4).status_code == 200
    ended = step(client, run_id, 5)
    assert ended.status_code == 409
    assert ended.json()["type"].endswith("schedule-ended")
    assert client.get(f"/v1/runs/{run_id}").json()["step"] == 4
