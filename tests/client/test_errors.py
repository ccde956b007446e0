"""Every exception class, produced by a real answer of a real server.

The lrkeeper service produces the problems it knows (404, 409s, 422s, and 500 /
503 once its PostgreSQL database is gone). Two things it never sends — 429 and
``Retry-After`` — come from a small real HTTP server standing in for the proxy or
load balancer that would send them. Giving up is proven against a closed port
and a killed service.
"""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from client import (
    Conflict,
    DeadlineExceeded,
    Forbidden,
    InvalidConfig,
    InvalidRequest,
    LRKeeper,
    NotEnoughData,
    NotFound,
    RemoteLRScheduler,
    RetryPolicy,
    RunConflict,
    RunNotRunning,
    ScheduleEnded,
    ServiceError,
    ServiceUnavailable,
    StepOutOfOrder,
    TooManyRequests,
    TransportError,
    Unauthorized,
)
from client.errors import error_from_problem
from service import problems
from tests.conftest import POSTGRES_ADMIN_URL, ServerPool, free_port, libpq_url

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 10}}
PLATEAU = {"type": "ReduceLROnPlateau", "params": {"patience": 1}}
GROUPS = [{"lr": 0.1, "momentum": 0.9}]
NO_RETRIES = RetryPolicy(deadline=0)
PROBLEM_PREFIX = "urn:lrkeeper:problem:"


class ParamGroupsOnly:
    def __init__(self) -> None:
        self.param_groups = [dict(group) for group in GROUPS]


# -- problems the lrkeeper service answers ------------------------------------------------


def test_unknown_run_raises_not_found(keeper: LRKeeper, run_id: str) -> None:
    with pytest.raises(NotFound) as raised:
        keeper.get_run(run_id)
    assert raised.value.status == 404
    assert raised.value.type == PROBLEM_PREFIX + "not-found"


def test_put_with_another_config_raises_run_conflict_naming_differences(
    keeper: LRKeeper, run_id: str
) -> None:
    keeper.put_run(run_id, COSINE, GROUPS)
    with pytest.raises(RunConflict) as raised:
        keeper.put_run(run_id, {"type": "CosineAnnealingLR", "params": {"T_max": 11}}, GROUPS)
    assert isinstance(raised.value, Conflict)
    assert raised.value.differences
    assert "T_max" in json.dumps(raised.value.differences)


def test_scheduler_on_an_optimizer_with_other_lrs_raises_run_conflict(
    keeper: LRKeeper, run_id: str
) -> None:
    RemoteLRScheduler(ParamGroupsOnly(), run_id, COSINE, client=keeper)
    other = ParamGroupsOnly()
    other.param_groups[0]["lr"] = 0.5
    with pytest.raises(RunConflict):
        RemoteLRScheduler(other, run_id, COSINE, client=keeper)


def test_skipping_steps_of_a_metric_driven_run_raises_step_out_of_order(
    keeper: LRKeeper, run_id: str
) -> None:
    keeper.put_run(run_id, PLATEAU, GROUPS)
    with pytest.raises(StepOutOfOrder) as raised:
        keeper.report_step(run_id, 3, {"val_loss": 1.0})
    assert raised.value.expected_step == 1


def every_problem_class(cls: type[problems.Problem]) -> list[type[problems.Problem]]:
    found = [cls]
    for subclass in cls.__subclasses__():
        found.extend(every_problem_class(subclass))
    return found


# A 405 answers a method the path lacks: the client never sends one.
NEVER_MET_BY_THE_CLIENT = {"method-not-allowed"}


def test_every_problem_the_service_answers_has_a_client_class_of_its_own() -> None:
    for problem_class in every_problem_class(problems.Problem):
        if problem_class.slug in NEVER_MET_BY_THE_CLIENT:
            continue
        body = problem_class("detail").to_dict()
        error = error_from_problem(problem_class.status, body)
        assert getattr(type(error), "slug", None) == problem_class.slug, problem_class


def test_a_step_on_a_finished_run_raises_run_not_running(keeper: LRKeeper, run_id: str) -> None:
    keeper.put_run(run_id, COSINE, GROUPS)
    keeper.report_step(run_id, 1)
    keeper.finish(run_id)
    with pytest.raises(RunNotRunning) as raised:
        keeper.report_step(run_id, 2)
    assert raised.value.problem["run_status"] == "finished"
    assert keeper.report_step(run_id, 1).replayed


@pytest.mark.parametrize("pipelined", [False, True], ids=["blocking", "pipelined"])
def test_stepping_past_one_cycle_raises_schedule_ended(
    keeper: LRKeeper, run_id: str, pipelined: bool
) -> None:
    scheduler = RemoteLRScheduler(
        ParamGroupsOnly(),
        run_id,
        {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": 3}},
        client=keeper,
        pipelined=pipelined,
    )
    for _ in range(3):  # torch allows step total_steps itself
        scheduler.step()
    lr_at_end = scheduler.get_last_lr()
    with pytest.raises(ScheduleEnded) as raised:
        scheduler.step()  # blocking: raised here
        scheduler.get_last_lr()  # pipelined: raised where the answer is needed
    assert (raised.value.step, raised.value.total_steps) == (4, 3)
    assert (scheduler.last_epoch, scheduler.get_last_lr()) == (3, lr_at_end)


def test_suggestion_before_ten_range_test_steps_raises_not_enough_data(
    keeper: LRKeeper, run_id: str
) -> None:
    config = {"type": "LRRangeTest", "params": {"start_lr": 1e-5, "end_lr": 1.0, "num_steps": 50}}
    scheduler = RemoteLRScheduler(ParamGroupsOnly(), run_id, config, client=keeper)
    for loss in (3.0, 2.5, 2.0):
        scheduler.step(loss)
    with pytest.raises(NotEnoughData):
        keeper.lr_suggestion(run_id)


def test_config_torch_refuses_raises_invalid_config_naming_the_field(
    keeper: LRKeeper, run_id: str
) -> None:
    with pytest.raises(InvalidConfig) as raised:
        keeper.put_run(run_id, {"type": "StepLR", "params": {"step_size": 0}}, GROUPS)
    assert raised.value.status == 422
    assert any("step_size" in error["loc"] for error in raised.value.errors)


@pytest.mark.parametrize("pipelined", [False, True], ids=["blocking", "pipelined"])
def test_missing_metric_raises_invalid_request_that_is_not_about_the_config(
    keeper: LRKeeper, run_id: str, pipelined: bool
) -> None:
    scheduler = RemoteLRScheduler(
        ParamGroupsOnly(), run_id, PLATEAU, client=keeper, pipelined=pipelined
    )
    with pytest.raises(InvalidRequest) as raised:
        scheduler.step()
        scheduler.get_last_lr()
    assert not isinstance(raised.value, InvalidConfig)
    assert any("val_loss" in error["loc"] for error in raised.value.errors)
    assert scheduler.last_epoch == 0


def test_page_size_out_of_range_raises_invalid_request(keeper: LRKeeper, run_id: str) -> None:
    keeper.put_run(run_id, COSINE, GROUPS)
    with pytest.raises(InvalidRequest) as raised:
        list(keeper.history(run_id, page_size=0))
    assert any("limit" in error["loc"] for error in raised.value.errors)


@pytest.fixture
def vanishing_database_server(server_factory: ServerPool) -> Iterator[LRKeeper]:
    """A server whose PostgreSQL database is dropped under it after one run was created."""
    server = server_factory("postgresql")
    with LRKeeper(server.base_url, retry=NO_RETRIES) as api:
        api.put_run("before-the-drop", COSINE, GROUPS)
        database = make_url(server.database_url).database
        with psycopg.connect(libpq_url(POSTGRES_ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        yield api


@pytest.mark.postgres
def test_service_that_lost_its_database_raises_service_unavailable_with_retry_after(
    vanishing_database_server: LRKeeper,
) -> None:
    with pytest.raises(ServiceUnavailable) as raised:
        vanishing_database_server.get_run("before-the-drop")
    assert raised.value.status == 503


@pytest.mark.postgres
def test_unready_service_raises_service_unavailable(vanishing_database_server: LRKeeper) -> None:
    with pytest.raises(ServiceUnavailable) as raised:
        vanishing_database_server.ready()
    assert raised.value.type == PROBLEM_PREFIX + "service-unavailable"


@pytest.mark.postgres
def test_unready_service_is_retried_until_the_deadline(
    vanishing_database_server: LRKeeper,
) -> None:
    patient = LRKeeper(
        vanishing_database_server.url,
        # Above the service's Retry-After (2 s), which the client honours.
        retry=RetryPolicy(deadline=5.0, initial_backoff=0.05, max_backoff=0.2),
    )
    with pytest.raises(DeadlineExceeded) as raised:
        patient.ready()
    assert raised.value.attempts > 1
    assert isinstance(raised.value.last_error, ServiceUnavailable)
    assert raised.value.__cause__ is raised.value.last_error


# -- what a proxy in front of the service may answer --------------------------------------


@dataclass
class ScriptedAnswer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/problem+json"


@dataclass
class StandInProxy:
    """A real HTTP server on 127.0.0.1 answering from a script (the last answer repeats)."""

    script: list[ScriptedAnswer]
    requests: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.answer()

            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.answer()

            def answer(self) -> None:
                proxy.requests.append((time.monotonic(), self.path, dict(self.headers)))
                index = min(len(proxy.requests), len(proxy.script)) - 1
                scripted = proxy.script[index]
                body = (
                    scripted.body.encode()
                    if isinstance(scripted.body, str)
                    else json.dumps(scripted.body).encode()
                )
                self.send_response(scripted.status)
                self.send_header("Content-Type", scripted.content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in scripted.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stand_in() -> Iterator[Any]:
    proxies: list[StandInProxy] = []

    def start(*script: ScriptedAnswer) -> StandInProxy:
        proxy = StandInProxy(list(script))
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.server.shutdown()
        proxy.server.server_close()


def problem(slug: str, status: int) -> dict[str, Any]:
    return {"type": PROBLEM_PREFIX + slug, "title": slug, "status": status, "detail": "stand-in"}


RUN_BODY = {
    "run_id": "proxied",
    "status": "running",
    "step": 0,
    "lr": [0.1],
    "scheduler": COSINE,
    "param_groups": GROUPS,
    "state": {"best": "Infinity"},
    "metadata": {},
    "created_at": "2026-11-23T05:57:10.285223+00:00",
    "updated_at": "2026-11-23T05:57:10.285223+00:00",
}


def test_too_many_requests_without_retries_raises_too_many_requests(stand_in: Any) -> None:
    proxy = stand_in(ScriptedAnswer(429, problem("too-many-requests", 429), {"Retry-After": "7"}))
    with LRKeeper(proxy.url, retry=NO_RETRIES) as api, pytest.raises(TooManyRequests) as raised:
        api.get_run("proxied")
    assert raised.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("status", "slug", "expected"),
    [(401, "unauthorized", Unauthorized), (403, "forbidden", Forbidden)],
)
def test_access_refusals_raise_their_own_classes_without_retrying(
    stand_in: Any, status: int, slug: str, expected: type[ServiceError]
) -> None:
    # A gateway in front of the service may refuse too (the service's own refusals:
    # tests/client/test_access.py).
    proxy = stand_in(ScriptedAnswer(status, problem(slug, status)))
    patient = RetryPolicy(deadline=30.0, initial_backoff=0.05, max_backoff=0.2)
    with LRKeeper(proxy.url, "some-token", retry=patient) as api, pytest.raises(expected):
        api.get_run("proxied")
    assert len(proxy.requests) == 1


def test_retry_after_is_waited_out_before_the_next_attempt(stand_in: Any) -> None:
    proxy = stand_in(
        ScriptedAnswer(503, problem("service-unavailable", 503), {"Retry-After": "1"}),
        ScriptedAnswer(200, RUN_BODY, content_type="application/json"),
    )
    with LRKeeper(proxy.url, retry=RetryPolicy(deadline=30, initial_backoff=0.01)) as api:
        run = api.get_run("proxied")
    assert run.run_id == "proxied"
    assert run.state["best"] == float("inf")
    (first_at, _, _), (second_at, _, _) = proxy.requests
    assert second_at - first_at >= 1.0


def test_retry_after_beyond_the_deadline_gives_up_at_once(stand_in: Any) -> None:
    unavailable = problem("service-unavailable", 503)
    proxy = stand_in(ScriptedAnswer(503, unavailable, {"Retry-After": "60"}))
    api = LRKeeper(proxy.url, retry=RetryPolicy(deadline=5))
    with api, pytest.raises(DeadlineExceeded) as raised:
        api.get_run("proxied")
    assert raised.value.attempts == 1
    assert isinstance(raised.value.last_error, ServiceUnavailable)


def test_html_error_page_raises_service_error_with_its_status(stand_in: Any) -> None:
    proxy = stand_in(ScriptedAnswer(502, "<html>Bad gateway</html>", content_type="text/html"))
    with LRKeeper(proxy.url, retry=NO_RETRIES) as api, pytest.raises(ServiceError) as raised:
        api.get_run("proxied")
    assert (raised.value.status, raised.value.type) == (502, "about:blank")
    assert "Bad gateway" in raised.value.detail


def test_token_is_sent_as_bearer_authorization(stand_in: Any) -> None:
    proxy = stand_in(ScriptedAnswer(200, RUN_BODY, content_type="application/json"))
    with LRKeeper(proxy.url, "s3cret", retry=NO_RETRIES) as api:
        api.get_run("proxied")
    (_, path, headers) = proxy.requests[0]
    assert path == "/v1/runs/proxied"
    assert headers["Authorization"] == "Bearer s3cret"


# -- giving up ----------------------------------------------------------------------------


def test_closed_port_ends_in_deadline_exceeded_within_the_deadline() -> None:
    deadline = 2.0
    policy = RetryPolicy(deadline=deadline, initial_backoff=0.05, max_backoff=0.5)
    with LRKeeper(f"http://127.0.0.1:{free_port()}", retry=policy) as api:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as raised:
            api.get_run("anything")
        elapsed = time.monotonic() - started
    assert raised.value.attempts > 1
    assert isinstance(raised.value.last_error, TransportError)
    assert "deadline 2s" in str(raised.value)
    # It stops when the next wait and attempt would end past the deadline, so no
    # earlier than one backoff before it; the upper margin only absorbs a busy machine.
    assert deadline - policy.max_backoff - 0.5 <= elapsed < deadline + 1.0


def test_closed_port_without_retries_raises_transport_error() -> None:
    api = LRKeeper(f"http://127.0.0.1:{free_port()}", retry=NO_RETRIES)
    with api, pytest.raises(TransportError) as raised:
        api.get_run("anything")
    assert not isinstance(raised.value, DeadlineExceeded)


@pytest.mark.parametrize("pipelined", [False, True], ids=["blocking", "pipelined"])
def test_step_that_gives_up_leaves_the_optimizer_untouched(
    server_factory: ServerPool, run_id: str, pipelined: bool
) -> None:
    server = server_factory("sqlite")
    policy = RetryPolicy(deadline=1.0, initial_backoff=0.05, max_backoff=0.2)
    optimizer = ParamGroupsOnly()
    with LRKeeper(server.base_url, retry=policy) as api:
        scheduler = RemoteLRScheduler(optimizer, run_id, COSINE, client=api, pipelined=pipelined)
        scheduler.step()
        held = (scheduler.last_epoch, scheduler.get_last_lr(), optimizer.param_groups[0]["lr"])
        server.kill()
        with pytest.raises(DeadlineExceeded):
            scheduler.step()
            optimizer.param_groups[0]["lr"]  # pipelined: raised where the lr is read
        assert (scheduler.last_epoch, scheduler.get_last_lr(), optimizer.param_groups[0]["lr"]) == (
            held
        )

        server.start()
        scheduler.step()
        assert scheduler.last_epoch == 2
        assert scheduler.get_last_lr() == api.lr_at(run_id, 2).lr
