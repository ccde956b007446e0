"""API.md "The hot path", "Changing a running run" and "LR range test", on both backends.

Values are checked against real torch 2.13.0 (tests/schedules/torch_oracle.py)
through the HTTP API, float for float. Every refusal must name its field and
leave the run exactly as it was.
"""

import json
import math
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, Backend, ServerPool
from tests.schedules.torch_oracle import run_in_torch

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 20, "eta_min": 0.001}}
PLATEAU = {"type": "ReduceLROnPlateau", "params": {"patience": 1, "factor": 0.5}}
ONE_CYCLE = {"type": "OneCycleLR", "params": {"max_lr": 1.0, "total_steps": 6}}
SGD = [{"lr": 0.1, "momentum": 0.9}]
TWO_GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.8}]


def new_run_id() -> str:
    return f"steps-{uuid.uuid4().hex[:12]}"


def create_run(
    client: httpx.Client, scheduler: dict[str, Any], param_groups: list[dict[str, Any]]
) -> str:
    run_id = new_run_id()
    response = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": scheduler, "param_groups": param_groups}
    )
    assert response.status_code == 201, response.text
    return run_id


def report(client: httpx.Client, run_id: str, step: Any, **body: Any) -> httpx.Response:
    return client.post(f"/v1/runs/{run_id}/steps", json={"step": step, **body})


def report_ok(client: httpx.Client, run_id: str, step: int, **body: Any) -> dict[str, Any]:
    response = report(client, run_id, step, **body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def get_run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


def history_steps(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(
        f"/v1/runs/{run_id}/history", params={"include_superseded": "true"}
    ).json()["items"]
    return items


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:lrkeeper:problem:{slug}"
    assert problem["status"] == status
    return problem


def assert_invalid(response: httpx.Response, loc: list[str | int]) -> dict[str, Any]:
    problem = assert_problem(response, 422, "invalid-request")
    assert loc in [error["loc"] for error in problem["errors"]], problem
    return problem


# -- advancing and replaying ---------------------------------------------------------------


def test_each_new_step_answers_torchs_lr(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, TWO_GROUPS)
    in_torch = run_in_torch(COSINE, TWO_GROUPS, steps=8)
    for step in range(1, 9):
        answer = report_ok(client, run_id, step)
        assert answer == {"step": step, "lr": in_torch.lr[step], "replayed": False, "events": []}
    run = get_run(client, run_id)
    assert run["step"] == 8
    assert run["lr"] == in_torch.lr[8]


def test_a_replayed_step_answers_what_it_recorded_and_changes_nothing(
    client: httpx.Client,
) -> None:
    run_id = create_run(client, COSINE, SGD)
    first = {step: report_ok(client, run_id, step, worker="rank-0") for step in (1, 2, 3)}
    before = get_run(client, run_id)
    for step in (3, 1, 2):
        replayed = report_ok(client, run_id, step, worker="rank-1", metrics={"loss": 9.0})
        assert replayed == {**first[step], "replayed": True}
    assert get_run(client, run_id) == before
    history = history_steps(client, run_id)
    assert [item["step"] for item in history] == [0, 1, 2, 3]
    assert {item["worker"] for item in history[1:]} == {"rank-0"}


def test_get_lr_answers_the_current_values_or_a_recorded_step(client: httpx.Client) -> None:
    run_id = create_run(client, ONE_CYCLE, TWO_GROUPS)
    in_torch = run_in_torch(ONE_CYCLE, TWO_GROUPS, steps=3)
    for step in (1, 2, 3):
        report_ok(client, run_id, step)
    current = client.get(f"/v1/runs/{run_id}/lr").json()
    assert current == {"step": 3, "lr": in_torch.lr[3], "momentum": in_torch.momentum[3]}
    for step in (0, 1, 2, 3):
        recorded = client.get(f"/v1/runs/{run_id}/lr", params={"step": step}).json()
        assert recorded == {
            "step": step,
            "lr": in_torch.lr[step],
            "momentum": in_torch.momentum[step],
        }


def test_get_lr_of_a_step_not_on_the_current_line_is_a_404(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, SGD)
    report_ok(client, run_id, 3)
    assert_problem(client.get(f"/v1/runs/{run_id}/lr", params={"step": 4}), 404, "not-found")
    client.post(f"/v1/runs/{run_id}/rewind", json={"step": 1})
    assert_problem(client.get(f"/v1/runs/{run_id}/lr", params={"step": 2}), 404, "not-found")
    assert_invalid(client.get(f"/v1/runs/{run_id}/lr", params={"step": -1}), ["query", "step"])


def test_momentum_is_reported_for_momentum_cycling_schedules_only(client: httpx.Client) -> None:
    adam_groups = [{"lr": 0.1, "betas": [0.9, 0.999]}, {"lr": 0.2, "momentum": 0.9}]
    run_id = create_run(client, ONE_CYCLE, adam_groups)
    in_torch = run_in_torch(ONE_CYCLE, [adam_groups[0]], steps=2)
    answer = report_ok(client, run_id, 1)
    assert answer["lr"][0] == in_torch.lr[1][0]
    assert answer["momentum"][0] == in_torch.momentum[1][0]
    assert len(answer["momentum"]) == 2
    plain = create_run(client, COSINE, SGD)
    assert "momentum" not in report_ok(client, plain, 1)
    assert "momentum" not in client.get(f"/v1/runs/{plain}/lr").json()


def test_a_gap_is_caught_up_for_schedules_without_metrics(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, SGD)
    in_torch = run_in_torch(COSINE, SGD, steps=6)
    answer = report_ok(client, run_id, 6, metrics={"loss": 0.5}, worker="rank-3")
    assert answer == {"step": 6, "lr": in_torch.lr[6], "replayed": False, "events": []}
    history = history_steps(client, run_id)
    assert [item["step"] for item in history] == list(range(7))
    assert [item["lr"] for item in history] == in_torch.lr
    assert [item["metrics"] for item in history[1:]] == [{}] * 5 + [{"loss": 0.5}]
    assert report_ok(client, run_id, 4)["lr"] == in_torch.lr[4]


def test_a_catch_up_reports_the_events_of_every_step_it_took(client: httpx.Client) -> None:
    warm_restarts = {"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 2}}
    run_id = create_run(client, warm_restarts, SGD)
    answer = report_ok(client, run_id, 5)
    assert [event["kind"] for event in answer["events"]] == ["warm_restart", "warm_restart"]
    assert report_ok(client, run_id, 5) == {**answer, "replayed": True}
    events = client.get(f"/v1/runs/{run_id}/events").json()["items"]
    assert [(event["step"], event["kind"]) for event in events] == [
        (2, "warm_restart"),
        (4, "warm_restart"),
    ]


def test_a_metric_driven_schedule_answers_409_with_the_expected_step_for_a_gap(
    client: httpx.Client,
) -> None:
    run_id = create_run(client, PLATEAU, SGD)
    report_ok(client, run_id, 1, metrics={"val_loss": 1.0})
    before = get_run(client, run_id)
    problem = assert_problem(
        report(client, run_id, 3, metrics={"val_loss": 1.0}), 409, "step-out-of-order"
    )
    assert problem["expected_step"] == 2
    assert get_run(client, run_id) == before


def test_a_missing_metric_is_a_422_naming_it(client: httpx.Client) -> None:
    run_id = create_run(client, PLATEAU, SGD)
    before = get_run(client, run_id)
    assert_invalid(report(client, run_id, 1), ["body", "metrics", "val_loss"])
    assert_invalid(
        report(client, run_id, 1, metrics={"loss": 1.0}), ["body", "metrics", "val_loss"]
    )
    assert get_run(client, run_id) == before


def test_plateau_follows_torch_including_nan_and_infinite_metrics(client: httpx.Client) -> None:
    run_id = create_run(client, PLATEAU, TWO_GROUPS)
    losses = [1.0, 0.9, math.nan, 0.95, math.inf, 0.5, -math.inf, 0.7]
    in_torch = run_in_torch(PLATEAU, TWO_GROUPS, steps=len(losses), metrics=losses)
    spelled = {math.inf: "Infinity", -math.inf: "-Infinity"}
    reductions = 0
    for step, loss in enumerate(losses, start=1):
        if math.isnan(loss) or step % 2 == 0:
            # Python's json writes bare NaN / Infinity tokens; the service must read them.
            body = json.dumps({"step": step, "metrics": {"val_loss": loss}})
            response = client.post(
                f"/v1/runs/{run_id}/steps",
                content=body,
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 200, response.text
            answer = response.json()
        else:
            answer = report_ok(client, run_id, step, metrics={"val_loss": spelled.get(loss, loss)})
        assert answer["lr"] == in_torch.lr[step], step
        reductions += len(answer["events"])
        for event in answer["events"]:
            assert event["kind"] == "plateau_reduction"
            assert event["detail"]["from"] == in_torch.lr[step - 1]
            assert event["detail"]["to"] == in_torch.lr[step]
    assert reductions > 0
    stored = [item["metrics"]["val_loss"] for item in history_steps(client, run_id)[1:]]
    assert stored == [1.0, 0.9, "NaN", 0.95, "Infinity", 0.5, "-Infinity", 0.7]


def test_a_fresh_plateau_state_carries_infinity_as_a_string(client: httpx.Client) -> None:
    run_id = create_run(client, PLATEAU, SGD)
    state = get_run(client, run_id)["state"]
    assert state["best"] == "Infinity"
    assert state["num_bad_epochs"] == 0


@pytest.mark.parametrize(
    "metrics",
    [
        {"val_loss": None},
        {"val_loss": "1.5"},
        {"val_loss": "nan"},
        {"val_loss": True},
        {"val_loss": [1.0]},
    ],
)
def test_a_metric_that_is_not_a_number_is_a_422_naming_it(
    client: httpx.Client, metrics: dict[str, Any]
) -> None:
    run_id = create_run(client, PLATEAU, SGD)
    before = get_run(client, run_id)
    assert_invalid(report(client, run_id, 1, metrics=metrics), ["body", "metrics", "val_loss"])
    assert get_run(client, run_id) == before


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"step": 0}, ["body", "step"]),
        ({"step": -3}, ["body", "step"]),
        ({"step": 1.5}, ["body", "step"]),
        ({"step": "2"}, ["body", "step"]),
        ({"step": True}, ["body", "step"]),
        ({"step": 2**31}, ["body", "step"]),
        ({}, ["body", "step"]),
        ({"step": 1, "metrics": [1.0]}, ["body", "metrics"]),
        ({"step": 1, "worker": "w" * 257}, ["body", "worker"]),
        ({"step": 1, "epoch": 1}, ["body", "epoch"]),
    ],
)
def test_an_invalid_step_report_is_a_422_naming_the_field(
    client: httpx.Client, body: dict[str, Any], loc: list[str]
) -> None:
    run_id = create_run(client, COSINE, SGD)
    before = get_run(client, run_id)
    response = client.post(f"/v1/runs/{run_id}/steps", json=body)
    assert_invalid(response, loc)
    assert get_run(client, run_id) == before


@pytest.mark.parametrize(
    ("content", "content_type", "status", "slug"),
    [
        (b"", "application/json", 422, "invalid-request"),
        (b'{"step": ', "application/json", 400, "invalid-json"),
        (b'{"step": 1, "worker": "\xff"}', "application/json", 400, "invalid-json"),
        (b'{"step": 1}', "text/plain", 415, "unsupported-media-type"),
        (b'{"step": 1}', None, 415, "unsupported-media-type"),
        (b"[1]", "application/merge-patch+json", 422, "invalid-request"),
    ],
)
def test_a_step_report_body_that_is_empty_broken_or_not_json_is_refused_as_such(
    client: httpx.Client, content: bytes, content_type: str | None, status: int, slug: str
) -> None:
    # Whatever the bytes, the hot route and PATCH /runs/{id} refuse them with the same
    # problem, and nothing is stored: a 422 names the body, bytes that are not JSON are a
    # 400, a body declared as something else a 415.
    run_id = create_run(client, COSINE, SGD)
    headers = {"content-type": content_type} if content_type else {}
    step_answer = client.post(f"/v1/runs/{run_id}/steps", content=content, headers=headers)
    patch_answer = client.patch(f"/v1/runs/{run_id}", content=content, headers=headers)
    problem = assert_problem(step_answer, status, slug)
    assert problem == assert_problem(patch_answer, status, slug)
    if status == 422:
        assert problem["errors"][0]["loc"][0] == "body"
    assert get_run(client, run_id)["step"] == 0


def test_a_step_report_for_an_unknown_run_is_a_404(client: httpx.Client) -> None:
    assert_problem(report(client, new_run_id(), 1), 404, "not-found")


def test_stepping_past_a_fixed_length_schedule_is_a_409_and_stores_nothing(
    client: httpx.Client,
) -> None:
    run_id = create_run(client, ONE_CYCLE, SGD)
    report_ok(client, run_id, 6)
    before = get_run(client, run_id)
    problem = assert_problem(report(client, run_id, 7), 409, "schedule-ended")
    assert problem["step"] == 7
    assert problem["total_steps"] == 6
    assert get_run(client, run_id) == before
    assert len(history_steps(client, run_id)) == 7


def test_a_catch_up_that_would_pass_the_end_stores_none_of_its_steps(
    client: httpx.Client,
) -> None:
    run_id = create_run(client, ONE_CYCLE, SGD)
    report_ok(client, run_id, 2)
    before = get_run(client, run_id)
    assert_problem(report(client, run_id, 9), 409, "schedule-ended")
    assert get_run(client, run_id) == before
    assert [item["step"] for item in history_steps(client, run_id)] == [0, 1, 2]


def test_a_step_the_schedule_fails_at_is_a_409_naming_the_parameter_and_the_step_once(
    client: httpx.Client,
) -> None:
    crashing = {"type": "LambdaLR", "params": {"lr_lambda": "1 / (3 - epoch)"}}
    run_id = create_run(client, crashing, SGD)
    report_ok(client, run_id, 2)
    before = get_run(client, run_id)
    problem = assert_problem(report(client, run_id, 3), 409, "schedule-failed")
    assert problem["detail"] == "lr_lambda failed at step 3: division by zero"
    assert (problem["step"], problem["parameter"]) == (3, "lr_lambda")
    # Every rank reporting the failing step is refused the same way; one event tells it.
    assert_problem(report(client, run_id, 3), 409, "schedule-failed")
    assert get_run(client, run_id) == before
    events = client.get(f"/v1/runs/{run_id}/events").json()["items"]
    failures = [event for event in events if event["kind"] == "schedule_failed"]
    assert [(event["step"], event["detail"]["parameter"]) for event in failures] == [
        (3, "lr_lambda")
    ]


def test_an_overflow_part_way_is_a_409_and_the_run_can_still_be_marked_failed(
    client: httpx.Client,
) -> None:
    overflowing = {"type": "LambdaLR", "params": {"lr_lambda": "10.0 ** (epoch * 100)"}}
    run_id = create_run(client, overflowing, SGD)
    report_ok(client, run_id, 3)  # a catch-up over steps 1-3
    problem = assert_problem(report(client, run_id, 4), 409, "schedule-failed")
    assert problem["detail"].startswith("lr_lambda failed at step 4: overflow")
    assert get_run(client, run_id)["step"] == 3
    marked = client.patch(f"/v1/runs/{run_id}", json={"status": "failed"})
    assert marked.status_code == 200 and marked.json()["status"] == "failed"


def test_an_int_lr_grown_past_the_float_range_fails_its_step_and_changes_nothing(
    client: httpx.Client,
) -> None:
    """torch keeps an int lr exact (5 × 3 × 4 × ...); past float range no optimizer can use it."""
    factorial = {"type": "MultiplicativeLR", "params": {"lr_lambda": "epoch + 2"}}
    run_id = create_run(client, factorial, [{"lr": 5}])
    assert report_ok(client, run_id, 3)["lr"] == [300]
    before = get_run(client, run_id)
    problem = assert_problem(report(client, run_id, 2000), 409, "schedule-failed")
    assert problem["step"] == 169 and "too large for a float" in problem["reason"]
    assert get_run(client, run_id) == before
    assert report_ok(client, run_id, 168)["step"] == 168
    preview = client.post(
        "/v1/preview", json={"scheduler": factorial, "param_groups": [{"lr": 5}], "steps": 2000}
    )
    assert assert_invalid(preview, ["body", "steps"])["detail"].startswith(
        "body.steps: step 169 failed"
    )


def test_a_catch_up_longer_than_the_configured_bound_is_a_422(
    server_factory: ServerPool,
) -> None:
    server = server_factory("sqlite", environment={"LRKEEPER_MAX_CATCH_UP_STEPS": "5"})
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        run_id = create_run(client, COSINE, SGD)
        before = get_run(client, run_id)
        problem = assert_invalid(report(client, run_id, 6), ["body", "step"])
        assert (problem["limit"], problem["max"]) == ("max_catch_up_steps", 5)
        assert get_run(client, run_id) == before
        assert report_ok(client, run_id, 5)["step"] == 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_catch_up_is_bounded_by_its_work_in_steps_times_param_groups(
    server_factory: ServerPool, backend: Backend
) -> None:
    """64 groups may catch up 1/64 of what one group may: the work holds the run's lock."""
    server = server_factory(backend, environment={"LRKEEPER_MAX_CATCH_UP_VALUES": "640"})
    many_groups = [{"lr": 0.1 / (index + 1)} for index in range(64)]
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        wide, narrow = create_run(client, COSINE, many_groups), create_run(client, COSINE, SGD)
        before = get_run(client, wide)
        problem = assert_invalid(report(client, wide, 11), ["body", "step"])
        assert (problem["limit"], problem["max"]) == ("max_catch_up_values", 640)
        assert "at most 10 steps" in problem["detail"]
        assert get_run(client, wide) == before
        assert report_ok(client, wide, 10)["step"] == 10
        assert report_ok(client, narrow, 640)["step"] == 640


# -- changing a running run ----------------------------------------------------------------


def test_set_lr_shows_at_once_and_later_steps_continue_as_torch_after_a_hand_edit(
    client: httpx.Client,
) -> None:
    run_id = create_run(client, COSINE, TWO_GROUPS)
    report_ok(client, run_id, 1)
    report_ok(client, run_id, 2)
    edited = [0.05, 0.004]
    in_torch = run_in_torch(COSINE, TWO_GROUPS, steps=5, lr_edits={2: edited})
    response = client.post(f"/v1/runs/{run_id}/lr", json={"lr": edited, "reason": "spike"})
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["lr"] == edited
    assert run["step"] == 2
    assert client.get(f"/v1/runs/{run_id}/lr").json() == {"step": 2, "lr": edited}
    # The recorded step stays as it was recorded.
    assert report_ok(client, run_id, 2)["lr"] == in_torch.lr[2]
    for step in (3, 4, 5):
        assert report_ok(client, run_id, step)["lr"] == in_torch.lr[step]
    events = client.get(f"/v1/runs/{run_id}/events").json()["items"]
    assert [(event["step"], event["kind"]) for event in events] == [(2, "lr_set")]
    assert events[0]["detail"] == {"from": in_torch.lr[2], "to": edited, "reason": "spike"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"lr": [0.1]}, ["body", "lr"]),
        ({"lr": [0.1, 0.2, 0.3]}, ["body", "lr"]),
        ({"lr": []}, ["body", "lr"]),
        ({"lr": [0.1, -0.2]}, ["body", "lr", 1]),
        ({"lr": [0.1, "NaN"]}, ["body", "lr", 1]),
        ({"lr": [0.1, None]}, ["body", "lr", 1]),
        ({"lr": "0.1"}, ["body", "lr"]),
        ({"learning_rate": [0.1, 0.2]}, ["body", "lr"]),
    ],
)
def test_set_lr_with_an_invalid_body_is_a_422_naming_the_field(
    client: httpx.Client, body: dict[str, Any], loc: list[str | int]
) -> None:
    run_id = create_run(client, COSINE, TWO_GROUPS)
    before = get_run(client, run_id)
    assert_invalid(client.post(f"/v1/runs/{run_id}/lr", json=body), loc)
    assert get_run(client, run_id) == before
    assert client.get(f"/v1/runs/{run_id}/events").json()["items"] == []


def test_rewind_restores_step_k_and_supersedes_the_later_history(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, SGD)
    for step in (1, 2, 3, 4):
        report_ok(client, run_id, step)
    at_two = client.get(f"/v1/runs/{run_id}/history", params={"start": 2, "end": 2}).json()
    client.post(f"/v1/runs/{run_id}/lr", json={"lr": [0.5]})
    response = client.post(f"/v1/runs/{run_id}/rewind", json={"step": 2})
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["step"] == 2
    assert run["lr"] == at_two["items"][0]["lr"]
    assert run["state"]["last_epoch"] == 2
    history = history_steps(client, run_id)
    assert [(item["step"], item["superseded"]) for item in history] == [
        (0, False),
        (1, False),
        (2, False),
        (3, True),
        (4, True),
    ]
    in_torch = run_in_torch(COSINE, SGD, steps=4)
    again = report_ok(client, run_id, 3)
    assert again == {"step": 3, "lr": in_torch.lr[3], "replayed": False, "events": []}
    current = client.get(f"/v1/runs/{run_id}/history").json()["items"]
    assert [item["step"] for item in current] == [0, 1, 2, 3]
    events = client.get(f"/v1/runs/{run_id}/events").json()["items"]
    assert [event["kind"] for event in events] == ["lr_set", "rewind"]
    assert events[1]["step"] == 2
    assert events[1]["detail"] == {"from": 4, "to": 2}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_replica_answers_the_new_line_after_another_replica_rewound_steps_it_had_seen(
    server_factory: ServerPool, backend: Backend
) -> None:
    """Each process remembers the highest step it saw recorded, to choose between the read
    and the write path; a rewind through another replica makes that memory stale, never
    an answer wrong."""
    first = server_factory(backend)
    second = server_factory(backend, database_url=first.database_url)
    with (
        httpx.Client(base_url=first.base_url, timeout=30) as seen_four,
        httpx.Client(base_url=second.base_url, timeout=30) as rewinder,
    ):
        run_id = create_run(seen_four, COSINE, SGD)
        for step in (1, 2, 3, 4):
            report_ok(seen_four, run_id, step)
        assert rewinder.post(f"/v1/runs/{run_id}/rewind", json={"step": 2}).status_code == 200
        edited = [0.05]
        assert rewinder.post(f"/v1/runs/{run_id}/lr", json={"lr": edited}).status_code == 200
        in_torch = run_in_torch(COSINE, SGD, steps=4, lr_edits={2: edited})
        new_three = report_ok(seen_four, run_id, 3)
        assert new_three == {"step": 3, "lr": in_torch.lr[3], "replayed": False, "events": []}
        assert report_ok(seen_four, run_id, 3) == {**new_three, "replayed": True}
        assert report_ok(rewinder, run_id, 3) == {**new_three, "replayed": True}
        new_four = report_ok(rewinder, run_id, 4)
        assert new_four["lr"] == in_torch.lr[4]
        assert report_ok(seen_four, run_id, 4) == {**new_four, "replayed": True}


def test_a_rewind_undoes_a_later_lr_change(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, SGD)
    report_ok(client, run_id, 1)
    client.post(f"/v1/runs/{run_id}/lr", json={"lr": [0.5]})
    run = client.post(f"/v1/runs/{run_id}/rewind", json={"step": 1}).json()
    in_torch = run_in_torch(COSINE, SGD, steps=2)
    assert run["lr"] == in_torch.lr[1]
    assert report_ok(client, run_id, 2)["lr"] == in_torch.lr[2]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"step": 5}, ["body", "step"]),
        ({"step": -1}, ["body", "step"]),
        ({"step": "1"}, ["body", "step"]),
        ({}, ["body", "step"]),
    ],
)
def test_a_rewind_to_a_step_not_on_the_line_is_a_422_and_changes_nothing(
    client: httpx.Client, body: dict[str, Any], loc: list[str]
) -> None:
    run_id = create_run(client, COSINE, SGD)
    report_ok(client, run_id, 2)
    before = get_run(client, run_id)
    assert_invalid(client.post(f"/v1/runs/{run_id}/rewind", json=body), loc)
    assert get_run(client, run_id) == before
    assert [item["superseded"] for item in history_steps(client, run_id)] == [False] * 3


def test_changing_an_unknown_run_is_a_404(client: httpx.Client) -> None:
    missing = new_run_id()
    assert_problem(client.post(f"/v1/runs/{missing}/lr", json={"lr": [0.1]}), 404, "not-found")
    assert_problem(client.post(f"/v1/runs/{missing}/rewind", json={"step": 0}), 404, "not-found")
    assert_problem(client.get(f"/v1/runs/{missing}/lr"), 404, "not-found")


# -- LR range test ---------------------------------------------------------------------------

RANGE_TEST = {
    "type": "LRRangeTest",
    "params": {"start_lr": 1e-4, "end_lr": 1.0, "num_steps": 30},
}


def range_test_loss(lr: float) -> float:
    """A loss that falls as the lr grows, then blows up past lr = 0.1."""
    return 2.0 - math.log10(lr) * 0.1 if lr < 0.1 else 2.0 + (lr - 0.1) * 200


def test_a_range_test_follows_the_contracts_lr_formula_and_says_stop(
    client: httpx.Client,
) -> None:
    run_id = create_run(client, RANGE_TEST, SGD)
    stops = []
    lr = get_run(client, run_id)["lr"][0]
    for step in range(1, 31):
        answer = report_ok(client, run_id, step, metrics={"loss": range_test_loss(lr)})
        assert answer["lr"] == [1e-4 * (1.0 / 1e-4) ** (step / 30)]
        stops.append(answer["stop"])
        lr = answer["lr"][0]
        if answer["stop"] and not stops[:-1].count(True):
            assert [event["kind"] for event in answer["events"]] == ["range_test_stop"]
    first_stop = stops.index(True)
    assert stops == [False] * first_stop + [True] * (30 - first_stop)
    replay = report_ok(client, run_id, first_stop + 1)
    assert replay["stop"] is True
    assert replay["replayed"] is True
    assert [event["kind"] for event in replay["events"]] == ["range_test_stop"]
    problem = assert_problem(
        report(client, run_id, 31, metrics={"loss": 1.0}), 409, "schedule-ended"
    )
    assert problem["total_steps"] == 30


def test_the_lr_suggestion_needs_ten_steps_then_answers(client: httpx.Client) -> None:
    run_id = create_run(client, RANGE_TEST, SGD)
    lr = get_run(client, run_id)["lr"][0]
    for step in range(1, 10):
        lr = report_ok(client, run_id, step, metrics={"loss": range_test_loss(lr)})["lr"][0]
    assert_problem(client.get(f"/v1/runs/{run_id}/lr-suggestion"), 409, "not-enough-data")
    for step in range(10, 25):
        lr = report_ok(client, run_id, step, metrics={"loss": range_test_loss(lr)})["lr"][0]
    response = client.get(f"/v1/runs/{run_id}/lr-suggestion")
    assert response.status_code == 200, response.text
    suggestion = response.json()
    assert set(suggestion) >= {"lr", "min_loss_lr", "base_lr", "max_lr", "method", "curve"}
    assert 1e-4 <= suggestion["lr"] <= 1.0
    assert suggestion["base_lr"] <= suggestion["max_lr"]
    assert len(suggestion["curve"]) == 24
    assert suggestion["method"] == "steepest"


def test_the_lr_suggestion_answers_the_method_asked_for_and_every_method_by_name(
    client: httpx.Client,
) -> None:
    run_id = create_run(client, RANGE_TEST, SGD)
    lr = get_run(client, run_id)["lr"][0]
    for step in range(1, 25):
        lr = report_ok(client, run_id, step, metrics={"loss": range_test_loss(lr)})["lr"][0]
    default = client.get(f"/v1/runs/{run_id}/lr-suggestion").json()
    by_name = default["suggestions"]
    assert set(by_name) == {"steepest", "minimum", "valley"}
    assert by_name["minimum"] == default["min_loss_lr"]
    for method in ("steepest", "minimum", "valley"):
        answer = client.get(f"/v1/runs/{run_id}/lr-suggestion", params={"method": method})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {**default, "method": method, "lr": by_name[method]}


def test_an_unknown_suggestion_method_is_a_422_naming_it(client: httpx.Client) -> None:
    run_id = create_run(client, RANGE_TEST, SGD)
    answer = client.get(f"/v1/runs/{run_id}/lr-suggestion", params={"method": "slide"})
    assert_invalid(answer, ["query", "method"])


def test_an_lr_suggestion_for_another_schedule_type_is_a_422(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, SGD)
    assert_invalid(client.get(f"/v1/runs/{run_id}/lr-suggestion"), ["path", "run_id"])
    assert_problem(client.get(f"/v1/runs/{new_run_id()}/lr-suggestion"), 404, "not-found")
