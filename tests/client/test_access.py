"""The client against a service with tokens: it sends them, and a refusal is raised at once.

"At once" is counted, not timed: the service's own /metrics says how many 401s
and 403s it answered, and a refused call must add exactly one.
"""

import re

import httpx
import pytest

from client import Forbidden, LRKeeper, RemoteLRScheduler, RetryPolicy, Unauthorized
from tests.conftest import ACCESS_TOKENS, LiveServer

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 10}}
GROUPS = [{"lr": 0.1, "momentum": 0.9}]
# Retries would be allowed all the time they like: only the refusal's class stops them.
PATIENT = RetryPolicy(deadline=60.0, initial_backoff=0.05, max_backoff=0.2)


class ParamGroupsOnly:
    def __init__(self) -> None:
        self.param_groups = [dict(group) for group in GROUPS]


def refusals_answered(server: LiveServer, status: int) -> float:
    """The service's count of answers with ``status``, over every route."""
    metrics = httpx.get(f"{server.base_url}/metrics").text
    pattern = rf'^lrkeeper_http_requests_total{{[^}}]*status="{status}"[^}}]*}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, metrics, flags=re.MULTILINE))


def test_a_wrong_token_raises_unauthorized_after_one_request_naming_the_url(
    token_server: LiveServer, run_id: str
) -> None:
    before = refusals_answered(token_server, 401)
    with (
        LRKeeper(token_server.base_url, ACCESS_TOKENS.wrong, retry=PATIENT) as api,
        pytest.raises(Unauthorized) as raised,
    ):
        api.get_run(run_id)
    assert refusals_answered(token_server, 401) - before == 1
    assert f"GET {token_server.base_url}/v1/runs/{run_id}: 401" in str(raised.value)
    assert raised.value.url == f"{token_server.base_url}/v1/runs/{run_id}"
    assert ACCESS_TOKENS.wrong not in str(raised.value)


def test_no_token_raises_unauthorized(token_server: LiveServer, run_id: str) -> None:
    with (
        LRKeeper(token_server.base_url, retry=PATIENT) as api,
        pytest.raises(Unauthorized, match="LRKEEPER_TOKEN"),
    ):
        api.preview(COSINE, GROUPS, steps=2)


def test_a_read_token_raises_forbidden_on_a_write_after_one_request(
    token_server: LiveServer, run_id: str
) -> None:
    before = refusals_answered(token_server, 403)
    with (
        LRKeeper(token_server.base_url, ACCESS_TOKENS.read, retry=PATIENT) as api,
        pytest.raises(Forbidden) as raised,
    ):
        api.put_run(run_id, COSINE, GROUPS)
    assert refusals_answered(token_server, 403) - before == 1
    assert f"PUT {token_server.base_url}/v1/runs/{run_id}: 403" in str(raised.value)


def test_the_token_comes_from_lrkeeper_token(
    token_server: LiveServer, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LRKEEPER_TOKEN", ACCESS_TOKENS.write)
    with LRKeeper(token_server.base_url, retry=PATIENT) as api:
        assert api.put_run(run_id, COSINE, GROUPS).step == 0
        assert api.report_step(run_id, 1).step == 1


def test_remote_scheduler_steps_with_a_write_token(token_server: LiveServer, run_id: str) -> None:
    optimizer = ParamGroupsOnly()
    scheduler = RemoteLRScheduler(
        optimizer, run_id, COSINE, url=token_server.base_url, token=ACCESS_TOKENS.write
    )
    try:
        scheduler.step()
        assert scheduler.last_epoch == 1
    finally:
        scheduler.close()


def test_remote_scheduler_with_a_read_token_is_forbidden_to_create_its_run(
    token_server: LiveServer, run_id: str
) -> None:
    with pytest.raises(Forbidden, match="write token"):
        RemoteLRScheduler(
            ParamGroupsOnly(), run_id, COSINE, url=token_server.base_url, token=ACCESS_TOKENS.read
        )
