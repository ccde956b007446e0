"""Every error is application/problem+json, and a failure never shows its traceback.

The framework's own errors are checked on the live server; the rest on an app from
``create_app`` with test-only routes, served by real uvicorn on a thread, since
the service has (rightly) no route that fails on purpose.
"""

import logging
import math
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from service import problems
from service.config import Settings
from service.main import create_app
from service.problems import StepOutOfOrder, Unauthorized

PROBLEM_MEDIA_TYPE = "application/problem+json"
SECRET_IN_EXCEPTION = "secret-detail-that-must-not-leak"


class EchoBody(BaseModel):
    name: str
    count: int = Field(ge=1)


def app_with_test_routes(database_path: Path) -> FastAPI:
    app = create_app(Settings(database_url=f"sqlite:///{database_path}"))

    @app.post("/test-only/echo")
    def echo(body: EchoBody) -> EchoBody:
        return body

    @app.get("/test-only/crash")
    def crash() -> None:
        raise RuntimeError(SECRET_IN_EXCEPTION)

    @app.get("/test-only/out-of-order")
    def out_of_order() -> None:
        raise StepOutOfOrder("expected step 5, got 9", expected_step=5, best=math.inf)

    @app.get("/test-only/unauthorized")
    def unauthorized() -> None:
        raise Unauthorized("a bearer token is required")

    return app


@pytest.fixture
def test_app_url(serve_app: Callable[[FastAPI], str], tmp_path: Path) -> str:
    return serve_app(app_with_test_routes(tmp_path / "problems.db"))


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    problem: dict[str, object] = response.json()
    assert problem["type"] == f"urn:lrkeeper:problem:{slug}"
    assert problem["status"] == status
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    return problem


def test_unknown_path_is_a_not_found_problem(client: httpx.Client) -> None:
    assert_problem(client.get(f"/no-such-thing/{uuid.uuid4()}"), 404, "not-found")


def test_wrong_method_is_a_method_not_allowed_problem_naming_the_allowed_ones(
    client: httpx.Client,
) -> None:
    response = client.delete("/healthz")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("method", ["DELETE", "OPTIONS", "POST"])
def test_allow_names_every_method_of_the_path_not_only_the_first_routes(
    client: httpx.Client, method: str
) -> None:
    # PUT, GET and PATCH /v1/runs/{run_id} are three routes; Starlette stops at the first.
    response = client.request(method, "/v1/runs/any-run")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, HEAD, PUT, PATCH"


def test_head_is_answered_wherever_get_is_with_the_same_headers_and_no_body(
    client: httpx.Client,
) -> None:
    got = client.get("/v1/scheduler-types")
    head = client.head("/v1/scheduler-types")
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]


def test_body_that_fastapi_cannot_parse_is_the_same_invalid_json_problem(
    test_app_url: str,
) -> None:
    # The test route reads its body the framework's way, not service.json_body's: the
    # adapter still answers with the one problem type for bytes that are not JSON.
    response = httpx.post(
        f"{test_app_url}/test-only/echo",
        content=b'{"name": "x", "count": ',
        headers={"content-type": "application/json"},
    )
    problem = assert_problem(response, 400, "invalid-json")
    assert str(problem["detail"]).startswith("the request body is not valid JSON: ")


def test_body_that_breaks_the_schema_lists_each_field_error(test_app_url: str) -> None:
    response = httpx.post(f"{test_app_url}/test-only/echo", json={"count": 0})
    problem = assert_problem(response, 422, "invalid-request")
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert sorted(tuple(error["loc"]) for error in errors) == [("body", "count"), ("body", "name")]
    assert all(isinstance(error["msg"], str) and error["msg"] for error in errors)
    assert set(errors[0]) == {"loc", "msg"}


def test_unexpected_exception_is_a_generic_500_and_the_traceback_goes_to_the_log(
    test_app_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="lrkeeper.errors"):
        response = httpx.get(f"{test_app_url}/test-only/crash")

    assert_problem(response, 500, "internal-error")
    assert SECRET_IN_EXCEPTION not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    logged = [record for record in caplog.records if record.name == "lrkeeper.errors"]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert str(logged[0].exc_info[1]) == SECRET_IN_EXCEPTION


def test_a_raised_problem_carries_its_extensions_with_non_finite_numbers_as_strings(
    test_app_url: str,
) -> None:
    problem = assert_problem(
        httpx.get(f"{test_app_url}/test-only/out-of-order"), 409, "step-out-of-order"
    )
    assert problem["expected_step"] == 5
    assert problem["best"] == "Infinity"
    assert problem["detail"] == "expected step 5, got 9"


def test_unauthorized_asks_for_a_bearer_token(test_app_url: str) -> None:
    response = httpx.get(f"{test_app_url}/test-only/unauthorized")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_invalid_json_on_a_real_route_is_an_invalid_json_problem_saying_where(
    client: httpx.Client,
) -> None:
    response = client.put(
        f"/v1/runs/problems-{uuid.uuid4().hex}",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    problem = assert_problem(response, 400, "invalid-json")
    assert "line 1 column 2 (char 1)" in str(problem["detail"])


def test_schema_error_on_a_real_route_names_the_field(client: httpx.Client) -> None:
    response = client.post(f"/v1/runs/problems-{uuid.uuid4().hex}/steps", json={"step": "three"})
    problem = assert_problem(response, 422, "invalid-request")
    assert ["body", "step"] in [error["loc"] for error in problem["errors"]]  # type: ignore[attr-defined]


def test_the_drawn_tree_names_every_problem_with_its_status_and_slug() -> None:
    drawing = problems.__doc__ or ""
    classes = [
        value
        for value in vars(problems).values()
        if isinstance(value, type) and issubclass(value, problems.Problem)
    ]
    assert {cls.__name__ for cls in classes} >= {"InvalidJson", "UnsupportedMediaType"}
    for cls in classes:
        if cls is problems.Problem or cls is problems.DatabaseUnavailable:
            continue  # the root, and a subclass drawn without a status of its own
        line = next((line for line in drawing.splitlines() if f" {cls.__name__} " in line), "")
        assert f"{cls.status} {cls.slug}" in line, cls.__name__
