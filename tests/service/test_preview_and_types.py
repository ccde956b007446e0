"""POST /v1/preview (torch's values, nothing stored) and GET /v1/scheduler-types; both backends."""

import math
from typing import Any

import httpx
import pytest

from tests.conftest import ServerPool
from tests.schedules.test_registry import API_TYPES
from tests.schedules.torch_oracle import run_in_torch

SGD = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.8}]

PREVIEW_CASES = [
    {"type": "CosineAnnealingLR", "params": {"T_max": 10, "eta_min": 0.001}},
    {"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 3, "T_mult": 2}},
    {"type": "LambdaLR", "params": {"lr_lambda": ["0.95 ** epoch", "min(1.0, (epoch + 1) / 5)"]}},
    {"type": "OneCycleLR", "params": {"max_lr": [1.0, 0.5], "total_steps": 12}},
    {"type": "CyclicLR", "params": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3}},
    {
        "type": "SequentialLR",
        "params": {
            "schedulers": [
                {"type": "LinearLR", "params": {"start_factor": 0.1, "total_iters": 3}},
                {"type": "ExponentialLR", "params": {"gamma": 0.9}},
            ],
            "milestones": [3],
        },
    },
]


def preview(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/preview", json=body)


def assert_invalid(response: httpx.Response, loc: list[str | int]) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["type"] == "urn:lrkeeper:problem:invalid-request"
    assert loc in [error["loc"] for error in problem["errors"]], problem
    return problem


@pytest.mark.parametrize("scheduler", PREVIEW_CASES, ids=lambda case: case["type"])
def test_preview_answers_torchs_values_for_every_step(
    client: httpx.Client, scheduler: dict[str, Any]
) -> None:
    response = preview(client, scheduler=scheduler, param_groups=SGD, steps=12)
    assert response.status_code == 200, response.text
    answer = response.json()
    in_torch = run_in_torch(scheduler, SGD, steps=12)
    assert answer["lr"] == in_torch.lr
    if in_torch.momentum is None:
        assert "momentum" not in answer
    else:
        assert answer["momentum"] == in_torch.momentum


def test_preview_of_a_metric_driven_schedule_reads_metric_i_with_step_i_plus_1(
    client: httpx.Client,
) -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {"patience": 1, "factor": 0.5}}
    losses = [1.0, 1.0, math.nan, 0.5, 0.6, 0.7, math.inf]
    spelled = [{math.inf: "Infinity"}.get(loss, loss) for loss in losses]
    spelled[2] = "NaN"
    response = preview(client, scheduler=plateau, param_groups=SGD, steps=7, metrics=spelled)
    assert response.status_code == 200, response.text
    assert response.json()["lr"] == run_in_torch(plateau, SGD, steps=7, metrics=losses).lr


def test_preview_of_zero_steps_is_the_state_after_construction(client: httpx.Client) -> None:
    scheduler = PREVIEW_CASES[0]
    answer = preview(client, scheduler=scheduler, param_groups=SGD, steps=0).json()
    assert answer == {"lr": [[0.1, 0.05]]}


def test_preview_of_a_step_that_fails_is_a_422_naming_the_step(client: httpx.Client) -> None:
    one_cycle = {"type": "OneCycleLR", "params": {"max_lr": 1.0, "total_steps": 5}}
    problem = assert_invalid(
        preview(client, scheduler=one_cycle, param_groups=SGD, steps=6), ["body", "steps"]
    )
    assert "step 6" in problem["detail"]
    crashing = {"type": "LambdaLR", "params": {"lr_lambda": "1 / (4 - epoch)"}}
    problem = assert_invalid(
        preview(client, scheduler=crashing, param_groups=SGD, steps=6), ["body", "steps"]
    )
    assert "step 4" in problem["detail"]


def test_preview_without_enough_metrics_is_a_422_naming_the_metrics(client: httpx.Client) -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {}}
    problem = assert_invalid(
        preview(client, scheduler=plateau, param_groups=SGD, steps=3, metrics=[1.0, 0.5]),
        ["body", "metrics"],
    )
    assert "step 3" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (
            {"scheduler": {"type": "StepLR", "params": {}}, "param_groups": SGD, "steps": 3},
            ["body", "scheduler", "params", "step_size"],
        ),
        (
            {"scheduler": PREVIEW_CASES[0], "param_groups": [{"lr": "x"}], "steps": 3},
            ["body", "param_groups", 0, "lr"],
        ),
        ({"scheduler": PREVIEW_CASES[0], "param_groups": SGD, "steps": -1}, ["body", "steps"]),
        ({"scheduler": PREVIEW_CASES[0], "param_groups": SGD, "steps": 100001}, ["body", "steps"]),
        ({"scheduler": PREVIEW_CASES[0], "param_groups": SGD}, ["body", "steps"]),
        (
            {"scheduler": PREVIEW_CASES[0], "param_groups": SGD, "steps": 2, "metrics": [None]},
            ["body", "metrics", 0],
        ),
    ],
)
def test_an_invalid_preview_is_a_422_naming_the_field(
    client: httpx.Client, body: dict[str, Any], loc: list[str | int]
) -> None:
    assert_invalid(client.post("/v1/preview", json=body), loc)


def test_a_preview_is_bounded_by_steps_times_param_groups(server_factory: ServerPool) -> None:
    server = server_factory("sqlite", environment={"LRKEEPER_MAX_PREVIEW_VALUES": "1000"})
    body = {"scheduler": PREVIEW_CASES[0], "param_groups": [{"lr": 0.1}] * 10}
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        refused = assert_invalid(
            client.post("/v1/preview", json={**body, "steps": 100}), ["body", "steps"]
        )
        assert (refused["limit"], refused["max"]) == ("max_preview_values", 1000)
        answer = client.post("/v1/preview", json={**body, "steps": 99})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["lr"]) == 100


def test_a_preview_stores_nothing(client: httpx.Client) -> None:
    before = client.get("/v1/runs", params={"limit": 1000}).json()
    preview(client, scheduler=PREVIEW_CASES[0], param_groups=SGD, steps=5)
    assert client.get("/v1/runs", params={"limit": 1000}).json() == before


def test_scheduler_types_lists_every_type_with_parameters_and_defaults(
    client: httpx.Client,
) -> None:
    response = client.get("/v1/scheduler-types")
    assert response.status_code == 200
    types = {entry["type"]: entry for entry in response.json()["items"]}
    assert set(types) == set(API_TYPES)
    step_lr = {param["name"]: param for param in types["StepLR"]["params"]}
    assert step_lr["step_size"]["required"] is True
    assert step_lr["gamma"]["default"] == 0.1
    assert step_lr["gamma"]["required"] is False
    cosine = {param["name"]: param for param in types["CosineAnnealingLR"]["params"]}
    assert cosine["eta_min"]["default"] == 0.0
