"""API.md "Runs": PUT / GET / PATCH one run and the keyset-paged list, on both backends.

Every refusal is checked for its problem type and the field it names, and for
leaving the stored run exactly as it was.
"""

import threading
import uuid
from typing import Any

import httpx
import pytest

from tests.schedules.torch_oracle import run_in_torch

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 100}}
GROUPS = [{"lr": 0.1, "momentum": 0.9}]
RUN_KEYS = {
    "run_id",
    "status",
    "step",
    "lr",
    "scheduler",
    "param_groups",
    "state",
    "metadata",
    "created_at",
    "updated_at",
}


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def put_run(
    client: httpx.Client,
    run_id: str,
    scheduler: dict[str, Any] = COSINE,
    param_groups: list[dict[str, Any]] = GROUPS,
    **extra: Any,
) -> httpx.Response:
    return client.put(
        f"/v1/runs/{run_id}",
        json={"scheduler": scheduler, "param_groups": param_groups, **extra},
    )


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:lrkeeper:problem:{slug}"
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    return problem


def assert_invalid(response: httpx.Response, loc: list[str | int]) -> dict[str, Any]:
    """A 422 whose errors name ``loc`` (the field that caused it)."""
    problem = assert_problem(response, 422, "invalid-request")
    locations = [error["loc"] for error in problem["errors"]]
    assert loc in locations, locations
    return problem


def test_put_creates_a_running_run_at_step_zero(client: httpx.Client) -> None:
    run_id = new_run_id()
    response = put_run(client, run_id, metadata={"owner": "ada"})
    assert response.status_code == 201
    run = response.json()
    assert set(run) == RUN_KEYS  # no momentum: cosine does not cycle it
    assert run["run_id"] == run_id
    assert run["status"] == "running"
    assert run["step"] == 0
    assert run["lr"] == [0.1]
    assert run["param_groups"] == GROUPS
    assert run["metadata"] == {"owner": "ada"}
    assert run["scheduler"] == {
        "type": "CosineAnnealingLR",
        "params": {"T_max": 100, "eta_min": 0.0},
    }
    assert run["state"]["last_epoch"] == 0
    assert client.get(f"/v1/runs/{run_id}").json() == run


def test_put_of_a_momentum_cycling_schedule_reports_momentum(client: httpx.Client) -> None:
    scheduler = {"type": "OneCycleLR", "params": {"max_lr": 1.0, "total_steps": 10}}
    response = put_run(client, new_run_id(), scheduler, [{"lr": 0.1, "betas": [0.9, 0.999]}])
    assert response.status_code == 201
    run = response.json()
    in_torch = run_in_torch(scheduler, [{"lr": 0.1, "betas": [0.9, 0.999]}], steps=0)
    assert run["lr"] == in_torch.lr[0]
    assert run["momentum"] == in_torch.momentum[0] == [0.95]


def test_put_again_with_the_same_config_answers_200_and_ignores_metadata(
    client: httpx.Client,
) -> None:
    run_id = new_run_id()
    created = put_run(client, run_id, metadata={"owner": "ada"}).json()
    spelled_out = {"type": "CosineAnnealingLR", "params": {"T_max": 100, "eta_min": 0.0}}
    again = put_run(client, run_id, spelled_out, metadata={"owner": "grace"})
    assert again.status_code == 200
    assert again.json() == created


def test_put_with_another_config_is_a_409_that_says_what_differs(client: httpx.Client) -> None:
    run_id = new_run_id()
    created = put_run(client, run_id).json()
    other = {"type": "CosineAnnealingLR", "params": {"T_max": 50, "eta_min": 0.001}}
    problem = assert_problem(
        put_run(client, run_id, other, [{"lr": 0.2, "momentum": 0.9}]), 409, "run-conflict"
    )
    assert {
        "field": "scheduler.params.T_max",
        "stored": 100,
        "requested": 50,
    } in problem["differences"]
    assert {
        "field": "scheduler.params.eta_min",
        "stored": 0.0,
        "requested": 0.001,
    } in problem["differences"]
    assert {"field": "param_groups.0.lr", "stored": 0.1, "requested": 0.2} in problem["differences"]
    assert len(problem["differences"]) == 3
    assert client.get(f"/v1/runs/{run_id}").json() == created


def test_put_with_another_type_names_the_type(client: httpx.Client) -> None:
    run_id = new_run_id()
    put_run(client, run_id)
    step_lr = {"type": "StepLR", "params": {"step_size": 10}}
    problem = assert_problem(put_run(client, run_id, step_lr), 409, "run-conflict")
    fields = {difference["field"] for difference in problem["differences"]}
    assert "scheduler.type" in fields


def test_concurrent_puts_of_one_run_create_it_exactly_once(client: httpx.Client) -> None:
    run_id = new_run_id()
    statuses: list[int] = []
    lock = threading.Lock()

    def create() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own_client:
            status = put_run(own_client, run_id).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 7 + [201]
    history = client.get(f"/v1/runs/{run_id}/history").json()["items"]
    assert [item["step"] for item in history] == [0]


@pytest.mark.parametrize(
    ("scheduler", "param_groups", "loc"),
    [
        (
            {"type": "CosineAnnealingLR", "params": {}},
            GROUPS,
            ["body", "scheduler", "params", "T_max"],
        ),
        (
            {"type": "CosineAnnealingLR", "params": {"T_max": "ten"}},
            GROUPS,
            ["body", "scheduler", "params", "T_max"],
        ),
        (
            {"type": "StepLR", "params": {"step_size": 0}},
            GROUPS,
            ["body", "scheduler", "params", "step_size"],
        ),
        (
            {"type": "CosineAnnealingLR", "params": {"T_max": 10, "T_maxx": 1}},
            GROUPS,
            ["body", "scheduler", "params", "T_maxx"],
        ),
        ({"type": "NoSuchLR", "params": {}}, GROUPS, ["body", "scheduler", "type"]),
        ({"params": {"T_max": 10}}, GROUPS, ["body", "scheduler", "type"]),
        (COSINE, [], ["body", "param_groups"]),
        (COSINE, [{"lr": 0.1}] * 65, ["body", "param_groups"]),
        (COSINE, [{"momentum": 0.9}], ["body", "param_groups", 0, "lr"]),
        (
            {"type": "OneCycleLR", "params": {"max_lr": 1.0, "total_steps": 10}},
            [{"lr": 0.1}],
            ["body", "param_groups", 0, "momentum"],
        ),
    ],
)
def test_put_of_an_invalid_config_is_a_422_naming_the_field_and_stores_nothing(
    client: httpx.Client,
    scheduler: dict[str, Any],
    param_groups: list[dict[str, Any]],
    loc: list[str | int],
) -> None:
    run_id = new_run_id()
    assert_invalid(put_run(client, run_id, scheduler, param_groups), loc)
    assert_problem(client.get(f"/v1/runs/{run_id}"), 404, "not-found")


def test_put_with_an_unknown_body_field_is_a_422_naming_it(client: httpx.Client) -> None:
    run_id = new_run_id()
    assert_invalid(put_run(client, run_id, paramgroups=[]), ["body", "paramgroups"])


def test_put_of_a_body_that_is_not_json_is_a_400_invalid_json(client: httpx.Client) -> None:
    response = client.put(
        f"/v1/runs/{new_run_id()}",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "invalid-json")


@pytest.mark.parametrize("run_id", ["has space", "semi;colon", "x" * 129, "ünïcode"])
def test_a_run_id_outside_the_allowed_alphabet_or_length_is_a_422(
    client: httpx.Client, run_id: str
) -> None:
    assert_invalid(put_run(client, run_id), ["path", "run_id"])
    assert_invalid(client.get(f"/v1/runs/{run_id}"), ["path", "run_id"])


def test_a_run_id_of_128_allowed_characters_is_accepted(client: httpx.Client) -> None:
    run_id = ("A-z.0_" + uuid.uuid4().hex) * 4
    run_id = run_id[:128]
    assert put_run(client, run_id).status_code == 201
    assert client.get(f"/v1/runs/{run_id}").json()["run_id"] == run_id


def test_get_of_an_unknown_run_is_a_404_problem(client: httpx.Client) -> None:
    assert_problem(client.get(f"/v1/runs/{new_run_id()}"), 404, "not-found")


def test_patch_changes_status_and_replaces_metadata(client: httpx.Client) -> None:
    run_id = new_run_id()
    created = put_run(client, run_id, metadata={"owner": "ada", "team": "x"}).json()
    response = client.patch(f"/v1/runs/{run_id}", json={"status": "finished"})
    assert response.status_code == 200
    patched = response.json()
    assert patched["status"] == "finished"
    assert patched["metadata"] == {"owner": "ada", "team": "x"}
    assert patched["updated_at"] >= created["updated_at"]
    patched = client.patch(f"/v1/runs/{run_id}", json={"metadata": {"note": "NaN loss"}}).json()
    assert patched["metadata"] == {"note": "NaN loss"}
    assert patched["status"] == "finished"
    assert client.get(f"/v1/runs/{run_id}").json() == patched
    unchanged = {key: patched[key] for key in ("scheduler", "param_groups", "state", "lr", "step")}
    assert unchanged == {key: created[key] for key in unchanged}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"status": "paused"}, ["body", "status"]),
        ({"status": None}, ["body", "status"]),
        ({"metadata": None}, ["body", "metadata"]),
        ({"metadata": [1, 2]}, ["body", "metadata"]),
        ({"step": 5}, ["body", "step"]),
    ],
)
def test_patch_with_an_invalid_field_is_a_422_naming_it_and_changes_nothing(
    client: httpx.Client, body: dict[str, Any], loc: list[str]
) -> None:
    run_id = new_run_id()
    created = put_run(client, run_id).json()
    assert_invalid(client.patch(f"/v1/runs/{run_id}", json=body), loc)
    assert client.get(f"/v1/runs/{run_id}").json() == created


def test_patch_of_an_unknown_run_is_a_404(client: httpx.Client) -> None:
    response = client.patch(f"/v1/runs/{new_run_id()}", json={"status": "failed"})
    assert_problem(response, 404, "not-found")


def test_list_pages_through_every_run_in_creation_order(client: httpx.Client) -> None:
    prefix = f"list{uuid.uuid4().hex[:8]}"
    created = [f"{prefix}-{index}" for index in range(5)]
    for run_id in created:
        assert put_run(client, run_id).status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"prefix": prefix, "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/v1/runs", params=params).json()
        pages += 1
        assert len(page["items"]) <= 2
        seen.extend(item["run_id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created
    assert pages == 3


def test_list_filters_by_status_and_by_a_case_sensitive_prefix(client: httpx.Client) -> None:
    prefix = f"Filt{uuid.uuid4().hex[:8]}"
    for index in range(3):
        put_run(client, f"{prefix}-{index}")
    put_run(client, f"{prefix.lower()}-other")
    client.patch(f"/v1/runs/{prefix}-1", json={"status": "failed"})
    listed = client.get("/v1/runs", params={"prefix": prefix}).json()
    assert [item["run_id"] for item in listed["items"]] == [f"{prefix}-{i}" for i in range(3)]
    assert listed["next_cursor"] is None
    failed = client.get("/v1/runs", params={"prefix": prefix, "status": "failed"}).json()
    assert [item["run_id"] for item in failed["items"]] == [f"{prefix}-1"]


def test_list_prefix_treats_like_wildcards_literally(client: httpx.Client) -> None:
    prefix = f"wild{uuid.uuid4().hex[:8]}"
    put_run(client, f"{prefix}_a")
    put_run(client, f"{prefix}xa")
    listed = client.get("/v1/runs", params={"prefix": f"{prefix}_"}).json()
    assert [item["run_id"] for item in listed["items"]] == [f"{prefix}_a"]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 1001}, ["query", "limit"]),
        ({"limit": "many"}, ["query", "limit"]),
        ({"status": "paused"}, ["query", "status"]),
        ({"cursor": "not-a-cursor"}, ["query", "cursor"]),
        ({"cursor": "LTE"}, ["query", "cursor"]),  # base64 of "-1"
    ],
)
def test_list_with_an_out_of_range_query_is_a_422_never_clamped(
    client: httpx.Client, params: dict[str, Any], loc: list[str]
) -> None:
    assert_invalid(client.get("/v1/runs", params=params), loc)


def test_list_accepts_the_maximum_limit(client: httpx.Client) -> None:
    assert client.get("/v1/runs", params={"limit": 1000}).status_code == 200
