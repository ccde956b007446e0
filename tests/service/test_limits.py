"""Request limits (API.md "Additions"): bodies, metrics, metadata, param groups, on both backends.

A body over ``LRKEEPER_MAX_BODY_BYTES`` is a 413 that arrives while the client
is still sending; a body within it that holds too much is a 422 naming the field
and the limit. Every refusal leaves the runs as they were.
"""

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.config import Settings
from service.limits import MAX_PARAM_GROUP_KEYS, PayloadLimits
from tests.conftest import BACKENDS, Backend, LiveServer, ServerPool

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = MIB
FIFTY_MB = 50 * 1000 * 1000
# "Does not grow by more than a few MB" (the server reads 64 KiB at a time at most).
RSS_GROWTH_BOUND_KB = 5 * 1024
STEP_LR = {"type": "StepLR", "params": {"step_size": 1}}


def new_run(client: httpx.Client, **body: Any) -> str:
    run_id = f"limits-{uuid.uuid4().hex[:12]}"
    response = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": STEP_LR, "param_groups": [{"lr": 1.0}], **body}
    )
    assert response.status_code == 201, response.text
    return run_id


def assert_refused(
    response: httpx.Response, status: int, limit: str, maximum: int
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["limit"] == limit
    assert problem["max"] == maximum
    assert str(maximum) in problem["detail"]
    return problem


def assert_limit_at(response: httpx.Response, loc: list[Any], limit: str, maximum: int) -> None:
    problem = assert_refused(response, 422, limit, maximum)
    assert problem["type"] == "urn:lrkeeper:problem:invalid-request"
    assert problem["errors"][0]["loc"] == loc
    assert f"LRKEEPER_{limit.upper()}" in problem["detail"]


def assert_step_unchanged(client: httpx.Client, run_id: str) -> None:
    run = client.get(f"/v1/runs/{run_id}").json()
    assert run["step"] == 0
    history = client.get(f"/v1/runs/{run_id}/history").json()["items"]
    assert [item["step"] for item in history] == [0]


def vm_rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def put_declaring(server: LiveServer, path: str, length: int) -> tuple[bytes, int]:
    """PUT a body of ``length`` spaces, reading the answer while sending; (answer, bytes sent).

    Raw sockets, because an HTTP client sends the whole body before it reads.
    """
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    connection.sendall(head.encode())
    sent = 0

    def send_body() -> None:
        nonlocal sent
        chunk = b" " * 65536
        try:
            while sent < length:
                connection.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection: what a refusal does

    sender = threading.Thread(target=send_body)
    sender.start()
    answer = b""
    try:
        while received := connection.recv(65536):
            answer += received
    except ConnectionResetError:
        pass  # after the answer: the server dropped the body it did not read
    sender.join(30)
    connection.close()
    return answer, sent


def test_a_declared_body_over_the_limit_is_refused_before_the_client_has_sent_it(
    live_server: LiveServer,
) -> None:
    assert live_server.process is not None
    pid = live_server.process.pid
    rss_before = vm_rss_kb(pid)

    answer, sent = put_declaring(live_server, f"/v1/runs/{uuid.uuid4().hex}", FIFTY_MB)

    rss_after = vm_rss_kb(pid)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"x-request-id: " in head.lower()
    assert b"connection: close" in head.lower()
    assert b'"limit":"max_body_bytes"' in body
    assert b"LRKEEPER_MAX_BODY_BYTES (1048576 bytes)" in body
    assert sent < FIFTY_MB
    assert rss_after - rss_before < RSS_GROWTH_BOUND_KB


def test_a_chunked_body_is_refused_once_it_passes_the_limit(client: httpx.Client) -> None:
    produced = 0

    def chunks() -> Iterator[bytes]:
        nonlocal produced
        while produced < FIFTY_MB:
            produced += 65536
            yield b" " * 65536

    run_id = uuid.uuid4().hex
    response = client.put(
        f"/v1/runs/{run_id}", content=chunks(), headers={"content-type": "application/json"}
    )

    problem = assert_refused(response, 413, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    assert problem["type"] == "urn:lrkeeper:problem:payload-too-large"
    assert "x-request-id" in response.headers
    assert produced < FIFTY_MB
    assert client.get(f"/v1/runs/{run_id}").status_code == 404


def test_a_300000_key_metrics_body_is_refused_and_records_nothing(client: httpx.Client) -> None:
    run_id = new_run(client)
    metrics = {f"m{index}": 0.5 for index in range(300_000)}

    response = client.post(f"/v1/runs/{run_id}/steps", json={"step": 1, "metrics": metrics})

    assert_refused(response, 413, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    assert_step_unchanged(client, run_id)


def test_50_mb_of_metadata_is_refused_and_creates_nothing(client: httpx.Client) -> None:
    run_id = f"limits-{uuid.uuid4().hex[:12]}"
    body = {"scheduler": STEP_LR, "param_groups": [{"lr": 1.0}], "metadata": {"x": "a" * FIFTY_MB}}

    response = client.put(f"/v1/runs/{run_id}", json=body)

    assert_refused(response, 413, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    assert client.get(f"/v1/runs/{run_id}").status_code == 404


def test_more_metrics_than_the_limit_is_a_422_naming_metrics(client: httpx.Client) -> None:
    run_id = new_run(client)
    metrics = {f"m{index}": 0.5 for index in range(65)}

    response = client.post(f"/v1/runs/{run_id}/steps", json={"step": 1, "metrics": metrics})

    assert_limit_at(response, ["body", "metrics"], "max_metrics", 64)
    assert_step_unchanged(client, run_id)


def test_a_metric_name_over_the_length_limit_is_a_422_naming_it(client: httpx.Client) -> None:
    run_id = new_run(client)
    name = "n" * 129

    response = client.post(f"/v1/runs/{run_id}/steps", json={"step": 1, "metrics": {name: 1.0}})

    assert_limit_at(response, ["body", "metrics", name], "max_metric_name_length", 128)
    assert_step_unchanged(client, run_id)


def test_metrics_at_both_limits_are_recorded(client: httpx.Client) -> None:
    run_id = new_run(client)
    metrics = {f"{index:03d}".ljust(128, "m"): float(index) for index in range(64)}

    response = client.post(f"/v1/runs/{run_id}/steps", json={"step": 1, "metrics": metrics})

    assert response.status_code == 200, response.text
    history = client.get(f"/v1/runs/{run_id}/history").json()["items"]
    assert history[-1]["metrics"] == metrics


def metadata_of_size(size: int) -> dict[str, str]:
    """Metadata whose compact JSON takes exactly ``size`` bytes."""
    return {"notes": "a" * (size - len('{"notes":""}'))}


def test_metadata_over_the_limit_is_a_422_on_put(client: httpx.Client) -> None:
    run_id = f"limits-{uuid.uuid4().hex[:12]}"
    body = {
        "scheduler": STEP_LR,
        "param_groups": [{"lr": 1.0}],
        "metadata": metadata_of_size(64 * 1024 + 1),
    }

    response = client.put(f"/v1/runs/{run_id}", json=body)

    assert_limit_at(response, ["body", "metadata"], "max_metadata_bytes", 64 * 1024)
    assert client.get(f"/v1/runs/{run_id}").status_code == 404


def test_metadata_over_the_limit_is_a_422_on_patch_and_the_old_stays(
    client: httpx.Client,
) -> None:
    run_id = new_run(client, metadata={"owner": "me"})

    response = client.patch(
        f"/v1/runs/{run_id}", json={"metadata": metadata_of_size(64 * 1024 + 1)}
    )

    assert_limit_at(response, ["body", "metadata"], "max_metadata_bytes", 64 * 1024)
    assert client.get(f"/v1/runs/{run_id}").json()["metadata"] == {"owner": "me"}


def test_metadata_of_exactly_the_limit_is_stored(client: httpx.Client) -> None:
    run_id = new_run(client)
    metadata = metadata_of_size(64 * 1024)

    response = client.patch(f"/v1/runs/{run_id}", json={"metadata": metadata})

    assert response.status_code == 200, response.text
    assert client.get(f"/v1/runs/{run_id}").json()["metadata"] == metadata


@pytest.mark.parametrize(
    ("group", "loc", "limit"),
    [
        pytest.param(
            {"lr": 0.1, **{f"k{index}": 0 for index in range(MAX_PARAM_GROUP_KEYS)}},
            ["body", "param_groups", 0],
            "max_param_group_keys",
            id="too-many-keys",
        ),
        pytest.param(
            {"lr": 0.1, "k" * 65: 0},
            ["body", "param_groups", 0, "k" * 65],
            "max_param_group_key_length",
            id="long-key",
        ),
        pytest.param(
            {"lr": 0.1, "name": "n" * 129},
            ["body", "param_groups", 0, "name"],
            "max_param_group_string_length",
            id="long-string",
        ),
        pytest.param(
            {"lr": 0.1, "betas": [0.9] * 17},
            ["body", "param_groups", 0, "betas"],
            "max_param_group_list_length",
            id="long-list",
        ),
        pytest.param(
            {"lr": 0.1, "extra": {"deep": {"deeper": 1}}},
            ["body", "param_groups", 0, "extra"],
            None,
            id="nested-object",
        ),
        pytest.param(
            {"lr": 0.1, "betas": [[0.9], [0.99]]},
            ["body", "param_groups", 0, "betas"],
            None,
            id="nested-list",
        ),
    ],
)
def test_a_param_group_outside_its_bounds_is_a_422_naming_the_field(
    client: httpx.Client, group: dict[str, Any], loc: list[Any], limit: str | None
) -> None:
    run_id = f"limits-{uuid.uuid4().hex[:12]}"

    response = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": STEP_LR, "param_groups": [group]}
    )

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["loc"] == loc
    assert problem.get("limit") == limit
    assert client.get(f"/v1/runs/{run_id}").status_code == 404


def test_an_optimizers_own_param_group_is_accepted(client: httpx.Client) -> None:
    """torch.optim.AdamW's group, as ``optimizer.param_groups`` holds it (tensors aside)."""
    adamw = {
        "lr": 0.001,
        "betas": [0.9, 0.999],
        "eps": 1e-08,
        "weight_decay": 0.01,
        "amsgrad": False,
        "foreach": None,
        "maximize": False,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "decoupled_weight_decay": True,
        "name": "backbone",
    }
    run_id = f"limits-{uuid.uuid4().hex[:12]}"

    response = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": STEP_LR, "param_groups": [adamw]}
    )

    assert response.status_code == 201, response.text


def test_preview_bounds_its_param_groups_too(client: httpx.Client) -> None:
    response = client.post(
        "/v1/preview",
        json={"scheduler": STEP_LR, "param_groups": [{"lr": 0.1, "x": {"y": 1}}], "steps": 3},
    )

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "param_groups", 0, "x"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_limits_are_read_from_the_settings_and_checked_before_the_items(
    backend: Backend, server_factory: ServerPool
) -> None:
    """With room for the body, a 300,000-key metrics object meets LRKEEPER_MAX_METRICS."""
    server = server_factory(
        backend,
        environment={
            "LRKEEPER_MAX_BODY_BYTES": str(64 * MIB),
            "LRKEEPER_MAX_METRICS": "2",
            "LRKEEPER_MAX_METADATA_BYTES": "100",
        },
    )
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        run_id = new_run(client)
        huge = {f"m{index}": 0.5 for index in range(300_000)}

        refused_huge = client.post(f"/v1/runs/{run_id}/steps", json={"step": 1, "metrics": huge})
        refused_three = client.post(
            f"/v1/runs/{run_id}/steps", json={"step": 1, "metrics": {"a": 1, "b": 2, "c": 3}}
        )
        refused_metadata = client.patch(
            f"/v1/runs/{run_id}", json={"metadata": metadata_of_size(101)}
        )

        assert_limit_at(refused_huge, ["body", "metrics"], "max_metrics", 2)
        assert "got 300000" in refused_huge.json()["detail"]
        assert_limit_at(refused_three, ["body", "metrics"], "max_metrics", 2)
        assert_limit_at(refused_metadata, ["body", "metadata"], "max_metadata_bytes", 100)
        assert_step_unchanged(client, run_id)


def test_the_settings_defaults_are_the_payload_limits_defaults() -> None:
    """The defaults are written in service.limits and read by Settings; the two must agree."""
    assert Settings().payload_limits() == PayloadLimits()


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        ("PATCH", "", {"metadata": {"note": ["a\x00b"]}}, ["body", "metadata"]),
        ("POST", "/steps", {"step": 1, "worker": "rank\x000"}, ["body", "worker"]),
        ("POST", "/steps", {"step": 1, "metrics": {"lo\x00ss": 1.0}}, ["body", "metrics"]),
        ("POST", "/lr", {"lr": [0.1], "reason": "\x00"}, ["body", "reason"]),
    ],
)
def test_a_nul_character_in_stored_text_is_a_422_on_every_backend_not_a_500(
    client: httpx.Client, method: str, path: str, body: dict[str, Any], loc: list[str]
) -> None:
    # PostgreSQL's text and jsonb cannot store U+0000; schemathesis found the 500 it caused.
    run_id = new_run(client)
    response = client.request(method, f"/v1/runs/{run_id}{path}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][:2] == loc
    assert_step_unchanged(client, run_id)


def test_a_nul_character_in_a_scheduler_config_is_a_422(client: httpx.Client) -> None:
    lambda_lr = {"type": "LambdaLR", "params": {"lr_lambda": "0.5\x00"}}
    response = client.put(
        f"/v1/runs/limits-{uuid.uuid4().hex[:12]}",
        json={"scheduler": lambda_lr, "param_groups": [{"lr": 1.0, "name": "x"}]},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "scheduler", "params", "lr_lambda"]


def test_a_nul_character_in_a_param_group_key_is_a_422_naming_it(client: httpx.Client) -> None:
    response = client.put(
        f"/v1/runs/limits-{uuid.uuid4().hex[:12]}",
        json={"scheduler": STEP_LR, "param_groups": [{"lr": 1.0, "na\x00me": 1}]},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "param_groups", 0, "na\x00me"]


def test_a_nul_character_in_a_run_id_prefix_is_a_422_not_a_500(client: httpx.Client) -> None:
    response = client.get("/v1/runs", params={"prefix": "limits-\x00"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "prefix"]


def ascii_json(body: dict[str, Any]) -> bytes:
    """JSON with every non-ASCII character escaped: how a lone surrogate travels."""
    return json.dumps(body, ensure_ascii=True).encode()


@pytest.mark.parametrize(
    ("scheduler", "group", "loc"),
    [
        (STEP_LR, {"lr": 1.0, "name": "\ud800"}, ["body", "param_groups", 0, "name"]),
        (
            {"type": "ReduceLROnPlateau", "params": {}, "monitor": "\udc00"},
            {"lr": 1.0},
            ["body", "scheduler", "monitor"],
        ),
    ],
)
def test_an_unpaired_surrogate_in_stored_text_is_a_422_not_a_500(
    client: httpx.Client, scheduler: dict[str, Any], group: dict[str, Any], loc: list[Any]
) -> None:
    # JSON may spell half a surrogate pair ("\ud800"); no database driver can encode it.
    response = client.put(
        f"/v1/runs/limits-{uuid.uuid4().hex[:12]}",
        content=ascii_json({"scheduler": scheduler, "param_groups": [group]}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc


def test_an_unpaired_surrogate_in_a_metric_name_is_a_422(client: httpx.Client) -> None:
    run_id = new_run(client)
    response = client.post(
        f"/v1/runs/{run_id}/steps",
        content=ascii_json({"step": 1, "metrics": {"\ud800": 1}}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert_step_unchanged(client, run_id)
