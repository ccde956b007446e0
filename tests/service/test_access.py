"""Access control: tokens and roles, protected mode, anonymous mode, the pages' login cookie.

Tokens are checked on the real ``lrkeeper serve`` (``token_server``, both backends)
over real httpx on 127.0.0.1. Protected mode depends on where a request comes
from; a client on another machine is played by ``httpx.ASGITransport`` with a
made-up client address (no traffic ever leaves loopback), and a proxy relaying a
remote client by a real uvicorn reading ``X-Forwarded-For`` / ``Forwarded``.
"""

import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from service.access import AccessPolicy
from service.auth import InvalidTokens, Tokens
from service.config import Settings
from service.main import create_app
from tests.conftest import ACCESS_TOKENS, LiveServer, ServerPool

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 10}}
GROUPS = [{"lr": 0.1}]
PROBLEM_MEDIA_TYPE = "application/problem+json"
TOKENS = ACCESS_TOKENS

OPEN, READ, WRITE, PAGE = "open", "read", "write", "page"
# Every route of the app and what it takes. A route missing here fails
# test_every_route_of_the_app_is_in_the_access_table: a new route is a decision.
ACCESS_BY_ROUTE: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("GET", "/metrics"): OPEN,
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/redoc"): OPEN,
    ("GET", "/login"): OPEN,
    ("POST", "/login"): OPEN,
    ("POST", "/logout"): OPEN,
    ("PUT", "/v1/runs/{run_id}"): WRITE,
    ("GET", "/v1/runs/{run_id}"): READ,
    ("PATCH", "/v1/runs/{run_id}"): WRITE,
    ("GET", "/v1/runs"): READ,
    ("POST", "/v1/runs/{run_id}/steps"): WRITE,
    ("GET", "/v1/runs/{run_id}/lr"): READ,
    ("POST", "/v1/runs/{run_id}/lr"): WRITE,
    ("POST", "/v1/runs/{run_id}/rewind"): WRITE,
    ("GET", "/v1/runs/{run_id}/lr-suggestion"): READ,
    ("GET", "/v1/runs/{run_id}/lr-suggestion/chart.svg"): READ,
    ("GET", "/v1/runs/{run_id}/lr-suggestion/chart.png"): READ,
    ("GET", "/v1/runs/{run_id}/history"): READ,
    ("GET", "/v1/runs/{run_id}/history.csv"): READ,
    ("GET", "/v1/runs/{run_id}/events"): READ,
    ("GET", "/v1/runs/{run_id}/chart.svg"): READ,
    ("GET", "/v1/runs/{run_id}/chart.png"): READ,
    ("POST", "/v1/preview/chart.svg"): READ,
    ("POST", "/v1/preview/chart.png"): READ,
    ("POST", "/v1/preview"): READ,
    ("GET", "/v1/scheduler-types"): READ,
    ("GET", "/"): PAGE,
    ("GET", "/runs/{run_id}"): PAGE,
    ("GET", "/compare"): PAGE,
    ("GET", "/preview"): PAGE,
    # Every file it serves is open (they hold no data); the test asks for charts.js.
    ("GET", "/static/{name:path}"): OPEN,
}
# What each credential gets: "refused-401", "refused-403", "login" (303 to the form) or
# "allowed" (anything but 401 and 403: the call went through to the route).
ALLOWED, LOGIN, REFUSED_401, REFUSED_403 = "allowed", "login", "refused-401", "refused-403"
EXPECTED: dict[str, dict[str, str]] = {
    OPEN: {"none": ALLOWED, "wrong": ALLOWED, "read": ALLOWED, "write": ALLOWED},
    READ: {"none": REFUSED_401, "wrong": REFUSED_401, "read": ALLOWED, "write": ALLOWED},
    WRITE: {"none": REFUSED_401, "wrong": REFUSED_401, "read": REFUSED_403, "write": ALLOWED},
    PAGE: {"none": LOGIN, "wrong": REFUSED_401, "read": ALLOWED, "write": ALLOWED},
}
CREDENTIALS: dict[str, str | None] = {
    "none": None,
    "wrong": TOKENS.wrong,
    "read": TOKENS.read,
    "write": TOKENS.write,
}


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'routes.db'}"))
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute | Route)
        for method in (route.methods or ())
        if method != "HEAD"  # Starlette adds HEAD to every GET route
    }


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def create_run(base_url: str) -> str:
    run_id = f"access-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=base_url, headers=bearer(TOKENS.write), timeout=30) as http:
        answer = http.put(f"/v1/runs/{run_id}", json={"scheduler": COSINE, "param_groups": GROUPS})
        assert answer.status_code in (200, 201), answer.text
    return run_id


def outcome(response: httpx.Response) -> str:
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
        return REFUSED_401
    if response.status_code == 403:
        assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
        return REFUSED_403
    if response.status_code == 303 and response.headers["location"].startswith("/login?next="):
        return LOGIN
    return ALLOWED


# -- the route table ----------------------------------------------------------------------


def test_every_route_of_the_app_is_in_the_access_table(tmp_path: Path) -> None:
    routes = app_routes(tmp_path)
    assert routes - ACCESS_BY_ROUTE.keys() == set(), "routes without an access decision"
    assert ACCESS_BY_ROUTE.keys() - routes == set(), "the table names routes the app lacks"


def test_every_route_answers_each_credential_as_its_access_says(
    token_server: LiveServer, tmp_path: Path
) -> None:
    run_id = create_run(token_server.base_url)
    mismatches = []
    with httpx.Client(base_url=token_server.base_url, timeout=30) as http:
        for method, path in sorted(app_routes(tmp_path)):
            access = ACCESS_BY_ROUTE[(method, path)]
            url = path.replace("{run_id}", run_id).replace("{name:path}", "charts.js")
            for credential, token in CREDENTIALS.items():
                # Bodies are empty objects: a write that gets through is refused as a 422
                # (or changes nothing), never a 401/403.
                body = {} if method in ("POST", "PUT", "PATCH") else None
                response = http.request(method, url, json=body, headers=bearer(token))
                expected = EXPECTED[access][credential]
                if outcome(response) != expected:
                    mismatches.append(
                        f"{method} {path} with {credential} token: expected {expected}, "
                        f"got {response.status_code} {response.text[:120]}"
                    )
    assert mismatches == []


def test_read_token_is_refused_on_writes_with_a_problem_saying_why(
    token_server: LiveServer,
) -> None:
    run_id = create_run(token_server.base_url)
    response = httpx.post(
        f"{token_server.base_url}/v1/runs/{run_id}/steps",
        json={"step": 1},
        headers=bearer(TOKENS.read),
    )
    assert response.status_code == 403
    assert response.json()["type"] == "urn:lrkeeper:problem:forbidden"
    assert "write token" in response.json()["detail"]


def test_preview_is_a_read_and_takes_a_read_token(token_server: LiveServer) -> None:
    response = httpx.post(
        f"{token_server.base_url}/v1/preview",
        json={"scheduler": COSINE, "param_groups": GROUPS, "steps": 3},
        headers=bearer(TOKENS.read),
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["lr"]) == 4


@pytest.mark.parametrize(
    "authorization",
    [f"Basic {TOKENS.write}", f"Bearer{TOKENS.write}", "Bearer", "Bearer two words", TOKENS.write],
)
def test_a_malformed_authorization_header_is_a_401(
    token_server: LiveServer, authorization: str
) -> None:
    response = httpx.get(
        f"{token_server.base_url}/v1/runs", headers={"Authorization": authorization}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKENS.write not in response.text


def test_the_bearer_scheme_is_case_insensitive(token_server: LiveServer) -> None:
    response = httpx.get(
        f"{token_server.base_url}/v1/runs", headers={"Authorization": f"bearer {TOKENS.read}"}
    )
    assert response.status_code == 200


def test_tokens_given_as_sha256_digests_work_and_the_digest_is_no_token(
    token_server: LiveServer,
) -> None:
    run_id = create_run(token_server.base_url)
    base = token_server.base_url
    read = httpx.get(f"{base}/v1/runs/{run_id}", headers=bearer(TOKENS.hashed_read))
    assert read.status_code == 200
    refused = httpx.patch(f"{base}/v1/runs/{run_id}", json={}, headers=bearer(TOKENS.hashed_read))
    assert refused.status_code == 403
    write = httpx.patch(f"{base}/v1/runs/{run_id}", json={}, headers=bearer(TOKENS.hashed_write))
    assert write.status_code == 200, write.text
    digest_as_token = TOKENS.setting.split(",")[2].removeprefix("read:")
    assert digest_as_token.startswith("sha256:")
    for presented in (digest_as_token, digest_as_token.removeprefix("sha256:")):
        answer = httpx.get(f"{base}/v1/runs/{run_id}", headers=bearer(presented))
        assert answer.status_code == 401


def test_an_unknown_token_is_refused_without_echoing_it(token_server: LiveServer) -> None:
    response = httpx.get(f"{token_server.base_url}/v1/runs", headers=bearer(TOKENS.wrong))
    assert response.status_code == 401
    assert TOKENS.wrong not in response.text
    assert TOKENS.wrong not in str(response.headers)


def test_tokens_never_appear_in_the_servers_log(token_server: LiveServer) -> None:
    base = token_server.base_url
    for token in TOKENS.every_token():
        httpx.get(f"{base}/v1/runs", headers=bearer(token))
        httpx.get(f"{base}/v1/runs/missing/lr", headers=bearer(token))
        httpx.put(f"{base}/v1/runs/bad%20id", json={}, headers=bearer(token))
        httpx.post(f"{base}/login", data={"token": token, "next": "/"})
    httpx.get(f"{base}/v1/runs", headers={"Authorization": f"Basic {TOKENS.write}"})
    log = token_server.log.read_text(errors="replace")
    assert "GET /v1/runs" in log  # the access log is on: the grep below has something to see
    for token in TOKENS.every_token():
        assert token not in log


def test_serve_logs_how_many_tokens_of_each_role_it_holds(token_server: LiveServer) -> None:
    assert "access: 4 tokens (2 read, 2 write)" in token_server.log.read_text()


# -- a malformed LRKEEPER_TOKENS ----------------------------------------------------------

SECRET = "s3cret-that-must-not-show"
MALFORMED = [
    (f"read:ok-token,admin:{SECRET}", "entry 2: role must be read or write"),
    (f"read:ok-token,,write:{SECRET}", "entry 2: empty"),
    (SECRET, "entry 1: expected ROLE:TOKEN"),
    (f"write:sha256:{SECRET}", "entry 1: sha256: must be followed by 64 hex digits"),
    (f"read:{SECRET},write:{SECRET}", "entry 2: the same token as entry 1"),
    ("read:", "entry 1: the token is empty"),
]


@pytest.mark.parametrize(("setting", "message"), MALFORMED)
def test_a_malformed_token_setting_is_refused_naming_the_entry_not_the_token(
    setting: str, message: str
) -> None:
    with pytest.raises(InvalidTokens) as raised:
        Tokens.parse(setting)
    assert f"LRKEEPER_TOKENS {message}" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_create_app_refuses_a_malformed_token_setting() -> None:
    with pytest.raises(InvalidTokens, match="entry 2"):
        create_app(Settings(database_url="sqlite://", tokens=f"read:a,admin:{SECRET}"))


@pytest.mark.parametrize(("setting", "message"), MALFORMED[:3])
def test_serve_exits_non_zero_with_one_line_naming_the_bad_entry(
    server_factory: ServerPool, setting: str, message: str
) -> None:
    server = server_factory("sqlite", environment={"LRKEEPER_TOKENS": setting}, start=False)
    server.launch()
    assert server.process is not None
    try:
        returncode = server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        raise
    output = server.log.read_text().splitlines()[1:]  # after the fixture's "launching" line
    assert returncode != 0
    assert len(output) == 1, output
    assert output[0].startswith(f"lrkeeper: LRKEEPER_TOKENS {message}")
    assert SECRET not in output[0]


# -- protected mode and anonymous mode: where the request comes from ----------------------


def call_app(
    settings: Settings,
    client: tuple[str, int],
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
) -> httpx.Response:
    """One request to ``create_app(settings)``, inside its lifespan, as if from ``client``."""

    async def request() -> httpx.Response:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://lrkeeper") as http:
                return await http.request(method, path, headers=headers, json=json)

    return anyio.run(request)


@pytest.fixture
def protected(tmp_path: Path) -> Settings:
    # Tokens and the anonymous switch given, so no LRKEEPER_* of the caller's can leak in.
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'protected.db'}", tokens="", allow_anonymous=False
    )


@pytest.fixture
def anonymous(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'anonymous.db'}", tokens="", allow_anonymous=True
    )


def assert_protected_mode_refusal(response: httpx.Response) -> None:
    assert response.status_code == 403
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    detail = response.json()["detail"]
    assert "LRKEEPER_TOKENS=" in detail
    assert "LRKEEPER_ALLOW_ANONYMOUS=true" in detail


def test_protected_mode_refuses_a_client_on_another_machine_saying_what_to_set(
    protected: Settings,
) -> None:
    response = call_app(protected, ("10.1.2.3", 5000), "GET", "/v1/scheduler-types")
    assert_protected_mode_refusal(response)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_protected_mode_serves_loopback_clients(protected: Settings, address: str) -> None:
    response = call_app(protected, (address, 5000), "GET", "/v1/scheduler-types")
    assert response.status_code == 200


@pytest.mark.parametrize("address", ["testclient", "", "::ffff:10.1.2.3", "2001:db8::1"])
def test_protected_mode_counts_what_is_no_loopback_address_as_remote(
    protected: Settings, address: str
) -> None:
    response = call_app(protected, (address, 5000), "GET", "/v1/scheduler-types")
    assert_protected_mode_refusal(response)


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/openapi.json", "/docs"])
def test_protected_mode_leaves_health_metrics_and_docs_open(protected: Settings, path: str) -> None:
    response = call_app(protected, ("10.1.2.3", 5000), "GET", path)
    assert response.status_code == 200


def test_anonymous_mode_lets_a_client_on_another_machine_read_and_write(
    anonymous: Settings,
) -> None:
    remote = ("10.1.2.3", 5000)
    assert call_app(anonymous, remote, "GET", "/v1/scheduler-types").status_code == 200
    # Past access control: the body is what is refused.
    assert call_app(anonymous, remote, "POST", "/v1/runs/x/steps", json={}).status_code == 422


def test_tokens_outrank_allow_anonymous(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'both.db'}",
        tokens=f"read:{TOKENS.read}",
        allow_anonymous=True,
    )
    refused = call_app(settings, ("127.0.0.1", 5000), "GET", "/v1/scheduler-types")
    assert refused.status_code == 401
    allowed = call_app(
        settings, ("10.1.2.3", 5000), "GET", "/v1/scheduler-types", headers=bearer(TOKENS.read)
    )
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    "forwarding",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"},
        {"Forwarded": "for=203.0.113.9"},
        {"Forwarded": 'for="[2001:db8:cafe::17]:4711";proto=https'},
        {"Forwarded": "for=127.0.0.1, for=203.0.113.9"},
        {"Forwarded": "for=unknown"},
        {"Forwarded": "proto=https"},
    ],
)
def test_protected_mode_refuses_a_remote_client_relayed_by_a_local_proxy(
    live_server: LiveServer, forwarding: dict[str, str]
) -> None:
    # live_server: the real `lrkeeper serve` without tokens; uvicorn trusts 127.0.0.1 as a
    # proxy and reads X-Forwarded-For, the service reads Forwarded itself.
    response = httpx.get(f"{live_server.base_url}/v1/scheduler-types", headers=forwarding)
    assert_protected_mode_refusal(response)


@pytest.mark.parametrize(
    "forwarding", [{"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": 'for="[::1]:5000"'}]
)
def test_protected_mode_serves_a_loopback_client_relayed_by_a_local_proxy(
    live_server: LiveServer, forwarding: dict[str, str]
) -> None:
    response = httpx.get(f"{live_server.base_url}/v1/scheduler-types", headers=forwarding)
    assert response.status_code == 200


def test_serve_logs_that_it_is_in_protected_mode(live_server: LiveServer) -> None:
    log = live_server.log.read_text()
    assert "access: protected mode, loopback clients only" in log


# -- the pages: a login form and a cookie -------------------------------------------------


def set_cookie_attributes(response: httpx.Response) -> set[str]:
    header = response.headers["set-cookie"]
    return {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}


def test_a_page_without_a_token_sends_the_person_to_the_login_form(
    token_server: LiveServer,
) -> None:
    run_id = create_run(token_server.base_url)
    with httpx.Client(base_url=token_server.base_url, timeout=30) as http:
        redirected = http.get(f"/runs/{run_id}", params={"x": "1"})
        assert redirected.status_code == 303
        assert redirected.headers["location"] == f"/login?next=%2Fruns%2F{run_id}%3Fx%3D1"
        form = http.get(redirected.headers["location"])
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/login">' in form.text
    assert 'name="token"' in form.text
    assert f'value="/runs/{run_id}?x=1"' in form.text


def test_logging_in_sets_an_httponly_strict_cookie_and_the_page_renders(
    token_server: LiveServer,
) -> None:
    run_id = create_run(token_server.base_url)
    urls: list[str] = []

    def note_url(request: httpx.Request) -> None:
        urls.append(str(request.url))

    with httpx.Client(
        base_url=token_server.base_url, timeout=30, event_hooks={"request": [note_url]}
    ) as http:
        logged_in = http.post("/login", data={"token": TOKENS.read, "next": f"/runs/{run_id}"})
        assert logged_in.status_code == 303
        assert logged_in.headers["location"] == f"/runs/{run_id}"
        assert set_cookie_attributes(logged_in) >= {"httponly", "samesite", "path"}
        assert "samesite=strict" in logged_in.headers["set-cookie"].lower()
        assert "secure" not in set_cookie_attributes(logged_in)  # plain http here
        page = http.get(logged_in.headers["location"])
        front = http.get("/")
    assert page.status_code == 200, page.text
    assert run_id in page.text
    assert front.status_code == 200
    seen = [*urls, logged_in.headers["location"], page.text, front.text]
    assert not any(TOKENS.read in text for text in seen)


def test_the_cookie_is_secure_when_the_request_came_over_https(token_server: LiveServer) -> None:
    # A TLS-terminating proxy on this machine says so; uvicorn trusts 127.0.0.1 for it.
    response = httpx.post(
        f"{token_server.base_url}/login",
        data={"token": TOKENS.read, "next": "/"},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 303
    assert "secure" in set_cookie_attributes(response)


def test_a_wrong_token_in_the_form_shows_the_form_again_and_sets_no_cookie(
    token_server: LiveServer,
) -> None:
    response = httpx.post(f"{token_server.base_url}/login", data={"token": TOKENS.wrong})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert "not one this service knows" in response.text
    assert TOKENS.wrong not in response.text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "runs"])
def test_login_sends_a_person_back_to_a_path_on_this_service_only(
    token_server: LiveServer, target: str
) -> None:
    response = httpx.post(
        f"{token_server.base_url}/login", data={"token": TOKENS.read, "next": target}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_the_cookie_opens_the_pages_and_the_apis_reads_but_never_a_write(
    token_server: LiveServer,
) -> None:
    run_id = create_run(token_server.base_url)
    with httpx.Client(base_url=token_server.base_url, timeout=30) as http:
        http.post("/login", data={"token": TOKENS.write, "next": "/"})
        assert http.get(f"/runs/{run_id}").status_code == 200
        assert http.get(f"/v1/runs/{run_id}/history").status_code == 200
        assert http.patch(f"/v1/runs/{run_id}", json={}).status_code == 401
        assert http.post("/v1/preview", json={}).status_code == 401
        step = {"step": 1, "worker": "w"}
        assert http.post(f"/v1/runs/{run_id}/steps", json=step).status_code == 401


def test_logging_out_clears_the_cookie(token_server: LiveServer) -> None:
    with httpx.Client(base_url=token_server.base_url, timeout=30) as http:
        http.post("/login", data={"token": TOKENS.read, "next": "/"})
        assert http.get("/").status_code == 200
        logged_out = http.post("/logout")
        assert logged_out.status_code == 303
        assert "max-age=0" in logged_out.headers["set-cookie"].lower()
        assert http.get("/").status_code == 303


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (Settings(tokens="read:a,write:b,write:c"), "access: 3 tokens (1 read, 2 write)"),
        (
            Settings(tokens="read:a", allow_anonymous=True),
            "access: 1 token (1 read, 0 write); LRKEEPER_ALLOW_ANONYMOUS is ignored while "
            "tokens are set",
        ),
        (
            Settings(tokens="", allow_anonymous=True),
            "access: anonymous, every client may read and write",
        ),
        (
            Settings(tokens="", allow_anonymous=False),
            "access: protected mode, loopback clients only; "
            "set LRKEEPER_TOKENS or LRKEEPER_ALLOW_ANONYMOUS=true",
        ),
    ],
)
def test_the_startup_line_names_the_access_mode(settings: Settings, line: str) -> None:
    assert AccessPolicy.from_settings(settings).describe() == line
