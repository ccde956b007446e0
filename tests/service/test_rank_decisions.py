"""API.md "Every rank's metric": a ranked run's metric-driven step waits for every rank.

Through the HTTP API on both backends: the 202 while ranks are missing, the reduced
metric the schedule is fed (checked against torch fed the same value), replays and
conflicting repeats, the refusals naming their field, the long-poll (``wait``) on
both routes, the timeout's decision and event, rewinds forgetting the reports, and a
long-poll that holds no database connection while it waits, across two replicas.
"""

import concurrent.futures
import math
import uuid
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, Backend, ServerPool
from tests.schedules.torch_oracle import run_in_torch

PLATEAU = {"type": "ReduceLROnPlateau", "params": {"patience": 0, "factor": 0.5}}
COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 10}}
SGD = [{"lr": 0.1, "momentum": 0.9}]


def exact_mean(values: list[float]) -> float:
    """The mean the service feeds a schedule: exact in rationals, rounded once."""
    return float(sum(map(Fraction, values), Fraction(0)) / len(values))


def ranked_run(
    client: httpx.Client,
    world_size: int,
    *,
    reduce: str = "mean",
    timeout_s: float = 300,
    scheduler: dict[str, Any] = PLATEAU,
) -> str:
    run_id = f"ranks-{uuid.uuid4().hex[:12]}"
    ranks = {"world_size": world_size, "reduce": reduce, "timeout_s": timeout_s}
    body = {"scheduler": scheduler, "param_groups": SGD, "ranks": ranks}
    response = client.put(f"/v1/runs/{run_id}", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["ranks"] == ranks
    return run_id


def report(
    client: httpx.Client, run_id: str, step: int, rank: int | None, loss: float | None, **query: Any
) -> httpx.Response:
    body: dict[str, Any] = {"step": step}
    if rank is not None:
        body["rank"] = rank
    if loss is not None:
        body["metrics"] = {"val_loss": loss}
    return client.post(f"/v1/runs/{run_id}/steps", json=body, params=query)


def history(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"/v1/runs/{run_id}/history").json()["items"]
    return items


def events(client: httpx.Client, run_id: str, kind: str) -> list[dict[str, Any]]:
    items = client.get(f"/v1/runs/{run_id}/events").json()["items"]
    return [item for item in items if item["kind"] == kind]


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["type"].endswith(slug), problem
    return problem


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.param
    return backend


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pool = ServerPool(tmp_path_factory.mktemp("ranks"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def client(backend: Backend, servers: ServerPool) -> Any:
    server = servers(backend, environment={"LRKEEPER_MAX_WAIT_SECONDS": "10"})
    with httpx.Client(base_url=server.base_url, timeout=30) as http_client:
        yield http_client


def test_a_step_waits_for_every_rank_then_the_schedule_reads_their_mean(
    client: httpx.Client,
) -> None:
    run_id = ranked_run(client, 3)
    losses = [[1.0, 1.2, 0.7], [0.9, 1.3, 1.1], [1.4, 0.2, 0.1]]
    for step, step_losses in enumerate(losses, start=1):
        for rank, loss in enumerate(step_losses[:-1]):
            pending = report(client, run_id, step, rank, loss)
            assert pending.status_code == 202, pending.text
            expected = {"pending": True, "step": step, "reported": rank + 1, "world_size": 3}
            assert pending.json() == expected
        decided = report(client, run_id, step, 2, step_losses[-1])
        assert decided.status_code == 200, decided.text
        assert decided.json()["replayed"] is False
    means = [exact_mean(step_losses) for step_losses in losses]
    torch_run = run_in_torch(PLATEAU, SGD, len(losses), means)
    rows = history(client, run_id)[1:]
    assert [row["metrics"] for row in rows] == [{"val_loss": mean} for mean in means]
    assert [row["lr"] for row in rows] == [groups for groups in torch_run.lr[1:]]


@pytest.mark.parametrize(
    ("reduce", "expected"),
    [
        ("mean", exact_mean([0.1, 0.2, 0.3, 1e-17])),
        ("sum", math.fsum([0.1, 0.2, 0.3, 1e-17])),
        ("min", 1e-17),
        ("max", 0.3),
    ],
)
def test_each_reduction_feeds_the_schedule_one_value(
    client: httpx.Client, reduce: str, expected: float
) -> None:
    run_id = ranked_run(client, 4, reduce=reduce)
    for rank, loss in enumerate([0.3, 1e-17, 0.2, 0.1]):
        response = report(client, run_id, 1, rank, loss)
    assert response.status_code == 200, response.text
    assert history(client, run_id)[1]["metrics"] == {"val_loss": expected}


def test_ranks_sending_one_all_reduced_value_get_that_value_back(client: httpx.Client) -> None:
    """fsum(3·x)/3 is 1 ulp off x for about one value in seven; the exact mean is not."""
    value = next(x / 7 for x in range(1, 1000) if math.fsum([x / 7] * 3) / 3 != x / 7)
    run_id = ranked_run(client, 3)
    for rank in range(3):
        report(client, run_id, 1, rank, value)
    assert history(client, run_id)[1]["metrics"] == {"val_loss": value}


def test_one_ranks_nan_makes_the_reduced_metric_nan(client: httpx.Client) -> None:
    run_id = ranked_run(client, 2)
    assert report(client, run_id, 1, 0, 0.5).status_code == 202
    body = {"step": 1, "rank": 1, "metrics": {"val_loss": "NaN"}}
    assert client.post(f"/v1/runs/{run_id}/steps", json=body).status_code == 200
    assert history(client, run_id)[1]["metrics"] == {"val_loss": "NaN"}


def test_a_rank_repeating_its_report_is_a_replay_and_changing_it_is_a_conflict(
    client: httpx.Client,
) -> None:
    run_id = ranked_run(client, 2)
    assert report(client, run_id, 1, 0, 0.5).status_code == 202
    again = report(client, run_id, 1, 0, 0.5)
    assert again.status_code == 202
    assert again.json()["reported"] == 1
    conflict = assert_problem(report(client, run_id, 1, 0, 0.4), 409, "rank-metric-conflict")
    assert (conflict["rank"], conflict["step"]) == (0, 1)
    decided = report(client, run_id, 1, 1, 0.7)
    assert decided.status_code == 200
    for rank, loss in ((0, 0.5), (1, 0.7)):
        replay = report(client, run_id, 1, rank, loss)
        assert replay.status_code == 200, replay.text
        assert replay.json() == {**decided.json(), "replayed": True}
    assert_problem(report(client, run_id, 1, 1, 0.71), 409, "rank-metric-conflict")
    assert history(client, run_id)[1]["metrics"] == {"val_loss": exact_mean([0.5, 0.7])}


def test_refusals_name_the_field_and_leave_the_step_waiting(client: httpx.Client) -> None:
    run_id = ranked_run(client, 2)
    problem = assert_problem(report(client, run_id, 1, 2, 0.5), 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["body", "rank"]
    problem = assert_problem(report(client, run_id, 1, None, 0.5), 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["body", "rank"]
    problem = assert_problem(report(client, run_id, 1, 0, None), 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["body", "metrics", "val_loss"]
    problem = assert_problem(report(client, run_id, 1, -1, 0.5), 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["body", "rank"]
    assert report(client, run_id, 1, 0, 0.5).json()["reported"] == 1
    problem = assert_problem(report(client, run_id, 2, 1, 0.5), 409, "step-out-of-order")
    assert problem["expected_step"] == 1
    assert client.get(f"/v1/runs/{run_id}").json()["step"] == 0

    unranked = f"ranks-{uuid.uuid4().hex[:12]}"
    body = {"scheduler": PLATEAU, "param_groups": SGD}
    assert client.put(f"/v1/runs/{unranked}", json=body).status_code == 201
    problem = assert_problem(report(client, unranked, 1, 0, 0.5), 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["body", "rank"]


def test_ranks_are_part_of_the_runs_identity(client: httpx.Client) -> None:
    run_id = ranked_run(client, 2)
    body = {"scheduler": PLATEAU, "param_groups": SGD, "ranks": {"world_size": 2}}
    same = client.put(f"/v1/runs/{run_id}", json=body)
    assert same.status_code == 200, same.text
    other = {**body, "ranks": {"world_size": 3}}
    problem = assert_problem(client.put(f"/v1/runs/{run_id}", json=other), 409, "run-conflict")
    assert problem["differences"] == [{"field": "ranks.world_size", "stored": 2, "requested": 3}]
    for ranks in (
        {"world_size": 0},
        {"world_size": 2, "reduce": "median"},
        {"world_size": 2, "timeout_s": 0},
    ):
        refused = client.put(f"/v1/runs/x-{uuid.uuid4().hex[:8]}", json={**body, "ranks": ranks})
        problem = assert_problem(refused, 422, "invalid-request")
        assert problem["errors"][0]["loc"][:2] == ["body", "ranks"]


def test_a_schedule_without_a_metric_is_decided_by_the_first_report_as_before(
    client: httpx.Client,
) -> None:
    run_id = ranked_run(client, 4, scheduler=COSINE)
    first = report(client, run_id, 1, 3, None)
    assert first.status_code == 200
    assert first.json()["replayed"] is False
    assert report(client, run_id, 1, 0, None).json()["replayed"] is True


def test_a_long_poll_answers_the_decision_when_the_last_rank_reports(
    client: httpx.Client, servers: ServerPool
) -> None:
    run_id = ranked_run(client, 3)
    assert report(client, run_id, 1, 0, 1.0).status_code == 202
    assert report(client, run_id, 1, 1, 2.0).status_code == 202
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        polled = pool.submit(client.get, f"/v1/runs/{run_id}/lr", params={"step": 1, "wait": 30})
        # Rank 1 repeating its report with ``wait``: what a client does after a 202.
        reported = pool.submit(report, client, run_id, 1, 1, 2.0, wait=30)
        assert report(client, run_id, 1, 2, 3.0).status_code == 200
        lr_answer, report_answer = polled.result(), reported.result()
    assert lr_answer.status_code == 200, lr_answer.text
    assert report_answer.status_code == 200, report_answer.text
    assert lr_answer.json()["lr"] == report_answer.json()["lr"] == [0.1]


def test_a_long_poll_that_runs_out_answers_pending_and_other_steps_answer_at_once(
    client: httpx.Client,
) -> None:
    run_id = ranked_run(client, 2)
    assert report(client, run_id, 1, 0, 1.0).status_code == 202
    waited = client.get(f"/v1/runs/{run_id}/lr", params={"step": 1, "wait": 0.3})
    assert waited.status_code == 202
    assert waited.json() == {"pending": True, "step": 1, "reported": 1, "world_size": 2}
    still = report(client, run_id, 1, 0, 1.0, wait=0.3)
    assert still.status_code == 202
    assert_problem(
        client.get(f"/v1/runs/{run_id}/lr", params={"step": 2, "wait": 3600}), 404, "not-found"
    )
    problem = assert_problem(
        client.get(f"/v1/runs/{run_id}/lr", params={"step": 1, "wait": 3601}),
        422,
        "invalid-request",
    )
    assert problem["errors"][0]["loc"] == ["query", "wait"]


def test_past_the_timeout_the_ranks_present_decide_and_an_event_names_the_missing(
    client: httpx.Client,
) -> None:
    # Two seconds: the two reports must both come before it, on a loaded machine too.
    run_id = ranked_run(client, 4, timeout_s=2)
    for rank, loss in ((0, 2.0), (2, 1.0)):
        assert report(client, run_id, 1, rank, loss).status_code == 202
    decided = client.get(f"/v1/runs/{run_id}/lr", params={"step": 1, "wait": 10})
    assert decided.status_code == 200, decided.text
    [timed_out] = events(client, run_id, "ranks_timed_out")
    assert timed_out["step"] == 1
    assert timed_out["detail"] == {
        "missing": [1, 3],
        "reported": 2,
        "world_size": 4,
        "timeout_s": 2,
    }
    assert history(client, run_id)[1]["metrics"] == {"val_loss": 1.5}
    late = report(client, run_id, 1, 3, 9.0)
    assert late.status_code == 200
    assert late.json()["replayed"] is True
    assert late.json()["events"][0]["kind"] == "ranks_timed_out"
    # The next step waits for all four again.
    assert report(client, run_id, 2, 1, 1.0).json()["reported"] == 1


def test_a_rewind_forgets_the_ranks_reports_of_the_steps_it_takes_back(
    client: httpx.Client,
) -> None:
    run_id = ranked_run(client, 2)
    for rank in (0, 1):
        report(client, run_id, 1, rank, 1.0)
    assert report(client, run_id, 2, 0, 1.0).status_code == 202
    assert client.post(f"/v1/runs/{run_id}/rewind", json={"step": 0}).status_code == 200
    assert report(client, run_id, 1, 0, 5.0).status_code == 202
    assert report(client, run_id, 1, 1, 7.0).status_code == 200
    assert report(client, run_id, 2, 0, 3.0).json()["reported"] == 1
    assert history(client, run_id)[1]["metrics"] == {"val_loss": 6.0}


@pytest.mark.postgres
def test_long_polls_hold_no_connection_and_see_a_decision_taken_on_another_replica(
    server_factory: ServerPool,
) -> None:
    """Two connections per replica and eight requests waiting on each: were a waiting
    request holding a connection, the last rank's report could not be recorded until
    the waits ran out (they would answer 202, and the report 503)."""
    environment = {"LRKEEPER_DB_POOL_SIZE": "2", "LRKEEPER_MAX_WAIT_SECONDS": "60"}
    first = server_factory("postgresql", environment=environment)
    second = server_factory("postgresql", database_url=first.database_url, environment=environment)
    with (
        httpx.Client(base_url=first.base_url, timeout=90) as one,
        httpx.Client(base_url=second.base_url, timeout=90) as other,
        concurrent.futures.ThreadPoolExecutor(16) as pool,
    ):
        run_id = ranked_run(one, 2)
        assert report(one, run_id, 1, 0, 1.0).status_code == 202
        waits = [
            pool.submit(http.get, f"/v1/runs/{run_id}/lr", params={"step": 1, "wait": 40})
            for http in (one, other)
            for _ in range(8)
        ]
        decided = report(other, run_id, 1, 1, 3.0)
        answers = [wait.result() for wait in waits]
    assert decided.status_code == 200, decided.text
    assert {answer.status_code for answer in answers} == {200}
    assert {tuple(answer.json()["lr"]) for answer in answers} == {tuple(decided.json()["lr"])}


def test_a_run_waiting_for_ranks_says_which_in_its_json_and_on_its_page(
    client: httpx.Client,
) -> None:
    run_id = ranked_run(client, 4, timeout_s=120)
    assert "waiting" not in client.get(f"/v1/runs/{run_id}").json()
    for rank in (3, 1):
        report(client, run_id, 1, rank, 1.0)
    waiting = client.get(f"/v1/runs/{run_id}").json()["waiting"]
    assert (waiting["step"], waiting["reported"], waiting["missing"]) == (1, [1, 3], [0, 2])
    since = datetime.fromisoformat(waiting["since"])
    assert datetime.fromisoformat(waiting["decided_by"]) - since == timedelta(seconds=120)
    page = client.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert "step 1 waits for rank(s) 0, 2 (2 of 4 reported)" in page.text
    for rank in (0, 2):
        report(client, run_id, 1, rank, 1.0)
    assert "waiting" not in client.get(f"/v1/runs/{run_id}").json()
