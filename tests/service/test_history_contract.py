"""API.md "History" and its details: ranges, every=N, keyset pages, CSV, events; both backends."""

import csv
import io
import uuid
from typing import Any

import httpx
import pytest

from tests.schedules.torch_oracle import run_in_torch

STEP_LR = {"type": "StepLR", "params": {"step_size": 3, "gamma": 0.5}}
ONE_CYCLE = {"type": "OneCycleLR", "params": {"max_lr": 1.0, "total_steps": 10}}
TWO_GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.8}]


def create_run(
    client: httpx.Client,
    scheduler: dict[str, Any] = STEP_LR,
    param_groups: list[dict[str, Any]] = TWO_GROUPS,
) -> str:
    run_id = f"hist-{uuid.uuid4().hex[:12]}"
    response = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": scheduler, "param_groups": param_groups}
    )
    assert response.status_code == 201, response.text
    return run_id


def advance_to(client: httpx.Client, run_id: str, last_step: int, **body: Any) -> None:
    for step in range(1, last_step + 1):
        response = client.post(f"/v1/runs/{run_id}/steps", json={"step": step, **body})
        assert response.status_code == 200, response.text


def history(client: httpx.Client, run_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/runs/{run_id}/history", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def steps_of(page: dict[str, Any]) -> list[int]:
    return [item["step"] for item in page["items"]]


def assert_invalid(response: httpx.Response, loc: list[str]) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "urn:lrkeeper:problem:invalid-request"
    assert loc in [error["loc"] for error in problem["errors"]], problem


def test_history_starts_at_step_zero_and_carries_what_each_step_recorded(
    client: httpx.Client,
) -> None:
    run_id = create_run(client)
    for step in (1, 2, 3):
        client.post(
            f"/v1/runs/{run_id}/steps",
            json={"step": step, "metrics": {"loss": 1.0 / step}, "worker": f"rank-{step}"},
        )
    page = history(client, run_id)
    in_torch = run_in_torch(STEP_LR, TWO_GROUPS, steps=3)
    assert page["next_cursor"] is None
    assert steps_of(page) == [0, 1, 2, 3]
    assert [item["lr"] for item in page["items"]] == in_torch.lr
    first, last = page["items"][0], page["items"][3]
    assert set(first) == {"step", "lr", "metrics", "worker", "recorded_at", "superseded"}
    assert first["metrics"] == {}
    assert first["worker"] is None
    assert last["metrics"] == {"loss": 1.0 / 3}
    assert last["worker"] == "rank-3"
    assert last["superseded"] is False
    assert last["recorded_at"] >= first["recorded_at"]


def test_start_and_end_are_inclusive_and_every_keeps_multiples(client: httpx.Client) -> None:
    run_id = create_run(client)
    advance_to(client, run_id, 12)
    assert steps_of(history(client, run_id, start=3, end=7)) == [3, 4, 5, 6, 7]
    assert steps_of(history(client, run_id, start=5, end=5)) == [5]
    assert steps_of(history(client, run_id, every=4)) == [0, 4, 8, 12]
    assert steps_of(history(client, run_id, start=1, end=10, every=3)) == [3, 6, 9]
    assert steps_of(history(client, run_id, start=13)) == []


def test_pages_follow_the_cursor_without_gaps_or_repeats(client: httpx.Client) -> None:
    run_id = create_run(client)
    advance_to(client, run_id, 10)
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 3, "start": 1, "every": 1}
    while True:
        page = history(client, run_id, **params)
        assert len(page["items"]) <= 3
        seen.extend(steps_of(page))
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == list(range(1, 11))


def test_superseded_rows_are_listed_only_on_request_in_step_order(client: httpx.Client) -> None:
    run_id = create_run(client)
    advance_to(client, run_id, 4)
    client.post(f"/v1/runs/{run_id}/rewind", json={"step": 1})
    advance_to(client, run_id, 3)
    assert steps_of(history(client, run_id)) == [0, 1, 2, 3]
    assert all(item["superseded"] is False for item in history(client, run_id)["items"])
    everything = []
    params: dict[str, Any] = {"include_superseded": "true", "limit": 2}
    while True:
        page = history(client, run_id, **params)
        everything.extend((item["step"], item["superseded"]) for item in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert everything == [
        (0, False),
        (1, False),
        (2, True),
        (2, False),
        (3, True),
        (3, False),
        (4, True),
    ]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 10001}, ["query", "limit"]),
        ({"every": 0}, ["query", "every"]),
        ({"every": -2}, ["query", "every"]),
        ({"start": -1}, ["query", "start"]),
        ({"end": -1}, ["query", "end"]),
        ({"start": 5, "end": 4}, ["query", "end"]),
        ({"cursor": "garbage!"}, ["query", "cursor"]),
        ({"include_superseded": "maybe"}, ["query", "include_superseded"]),
        ({"format": "xml"}, ["query", "format"]),
    ],
)
def test_an_out_of_range_history_query_is_a_422_never_clamped(
    client: httpx.Client, params: dict[str, Any], loc: list[str]
) -> None:
    run_id = create_run(client)
    assert_invalid(client.get(f"/v1/runs/{run_id}/history", params=params), loc)


def test_the_largest_allowed_limit_is_accepted(client: httpx.Client) -> None:
    run_id = create_run(client)
    assert steps_of(history(client, run_id, limit=10000)) == [0]


def test_history_of_an_unknown_run_is_a_404(client: httpx.Client) -> None:
    response = client.get("/v1/runs/no-such-run-here/history")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:lrkeeper:problem:not-found"
    assert client.get("/v1/runs/no-such-run-here/events").status_code == 404


def read_csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_csv_has_the_contracts_columns_with_momentum_and_metrics(client: httpx.Client) -> None:
    run_id = create_run(client, ONE_CYCLE)
    client.post(f"/v1/runs/{run_id}/steps", json={"step": 1, "metrics": {"loss": 2.5}})
    client.post(
        f"/v1/runs/{run_id}/steps",
        json={"step": 2, "metrics": {"loss": "NaN", "acc": 0.5}, "worker": "w0"},
    )
    response = client.get(f"/v1/runs/{run_id}/history", headers={"Accept": "text/csv"})
    rows = read_csv(response)
    header = response.text.splitlines()[0].split(",")
    assert header == [
        "step",
        "lr_0",
        "lr_1",
        "momentum_0",
        "momentum_1",
        "acc",
        "loss",
        "worker",
        "recorded_at",
        "superseded",
    ]
    in_torch = run_in_torch(ONE_CYCLE, TWO_GROUPS, steps=2)
    assert [int(row["step"]) for row in rows] == [0, 1, 2]
    assert [[float(row["lr_0"]), float(row["lr_1"])] for row in rows] == in_torch.lr
    assert in_torch.momentum is not None
    assert [
        [float(row["momentum_0"]), float(row["momentum_1"])] for row in rows
    ] == in_torch.momentum
    assert [row["loss"] for row in rows] == ["", "2.5", "NaN"]
    assert [row["acc"] for row in rows] == ["", "", "0.5"]
    assert [row["worker"] for row in rows] == ["", "", "w0"]
    assert {row["superseded"] for row in rows} == {"false"}


def test_csv_without_momentum_cycling_has_no_momentum_columns_and_pages_by_header(
    client: httpx.Client,
) -> None:
    run_id = create_run(client)
    advance_to(client, run_id, 4)
    response = client.get(f"/v1/runs/{run_id}/history", params={"format": "csv", "limit": 3})
    rows = read_csv(response)
    assert list(rows[0]) == ["step", "lr_0", "lr_1", "worker", "recorded_at", "superseded"]
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    cursor = response.headers["X-Next-Cursor"]
    rest = read_csv(
        client.get(
            f"/v1/runs/{run_id}/history",
            params={"cursor": cursor, "limit": 3},
            headers={"Accept": "text/csv"},
        )
    )
    assert [row["step"] for row in rest] == ["3", "4"]


def test_events_list_what_happened_in_order(client: httpx.Client) -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {"patience": 0}}
    run_id = create_run(client, plateau, [{"lr": 0.1}])
    for step, loss in enumerate([1.0, 2.0, 3.0], start=1):
        client.post(f"/v1/runs/{run_id}/steps", json={"step": step, "metrics": {"val_loss": loss}})
    client.post(f"/v1/runs/{run_id}/lr", json={"lr": [0.2]})
    client.post(f"/v1/runs/{run_id}/rewind", json={"step": 2})
    page = client.get(f"/v1/runs/{run_id}/events").json()
    assert page["next_cursor"] is None
    assert [(item["step"], item["kind"]) for item in page["items"]] == [
        (2, "plateau_reduction"),
        (3, "plateau_reduction"),
        (3, "lr_set"),
        (2, "rewind"),
    ]
    assert set(page["items"][0]) == {"step", "kind", "detail", "recorded_at"}
    first_page = client.get(f"/v1/runs/{run_id}/events", params={"limit": 3}).json()
    assert len(first_page["items"]) == 3
    rest = client.get(
        f"/v1/runs/{run_id}/events", params={"cursor": first_page["next_cursor"]}
    ).json()
    assert [item["kind"] for item in rest["items"]] == ["rewind"]
