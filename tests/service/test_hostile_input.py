"""Hostile input, as a table: each row the status it must get, on the live server, both backends.

Sizes, nesting, ids with control and unicode characters, every expression escape
we know of, bytes that are not JSON or not UTF-8, NaN and huge numbers where they
do not belong, strings where numbers go, U+0000 where PostgreSQL cannot store it.
Every row must be answered with its 4xx (never a 5xx) as problem+json, naming the
field when a field is at fault. After the table the server still answers
/healthz, its resident memory has grown by less than ``RSS_GROWTH_BOUND_KB`` (32 MiB)
and stays below ``RSS_BOUND_KB`` (256 MiB).

Beside the table, hypothesis puts random JSON (huge and non-finite numbers, U+0000,
nesting) in place of each field of each body, 100 derandomized examples per backend,
and random text in every query parameter of every reading route, 60 more: never a 5xx.

The rows run in one test, so that the figures recorded at the end (README
"Input bounds") count every input, and the health check comes after all of them.
"""

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.limits import MAX_JSON_DEPTH_CEILING
from tests.conftest import BACKENDS, Backend, LiveServer, ReliabilityLog, ServerPool

MIB = 1024 * 1024
# The table sends ~8 MB in all; a server that kept what it read, or a copy per level of
# nesting, would grow by more. Generous (measured: ~1 MiB): arenas stay mapped after a peak.
RSS_GROWTH_BOUND_KB = 32 * 1024
# And in all: a fresh server is ~90-100 MiB (measured), the table must not take it far past.
RSS_BOUND_KB = 256 * 1024
STEP_LR = {"type": "StepLR", "params": {"step_size": 1}}
GROUPS = [{"lr": 0.1}]
LR_LAMBDA_LOC = ["body", "scheduler", "params", "lr_lambda"]


@dataclass(frozen=True)
class Hostile:
    """One row: a request, and the answer it must get.

    ``path`` may hold ``{run}`` (an existing run) or ``{new}`` (a fresh run id).
    ``loc`` is the start of the first error's ``loc`` when a field is at fault.
    """

    name: str
    method: str
    path: str
    body: bytes | None
    status: int
    slug: str
    loc: tuple[str | int, ...] | None = None
    content_type: str | None = "application/json"


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def new_run_body(**extra: Any) -> dict[str, Any]:
    return {"scheduler": STEP_LR, "param_groups": GROUPS, **extra}


def nested_object(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def lambda_run(expression: Any) -> bytes:
    return as_json(
        new_run_body(scheduler={"type": "LambdaLR", "params": {"lr_lambda": expression}})
    )


def size_rows() -> list[Hostile]:
    many_metrics = {f"m{index}": 0.5 for index in range(10_000)}
    long_array = {"step": 1, "metrics": {"loss": 0.5}, "worker": "w", "extra": [0] * 100_000}
    return [
        Hostile("2 MB body", "PUT", "/v1/runs/{new}", b" " * (2 * MIB), 413, "payload-too-large"),
        Hostile(
            "900 KB metadata string",
            "PUT",
            "/v1/runs/{new}",
            as_json(new_run_body(metadata={"notes": "x" * 900_000})),
            422,
            "invalid-request",
            ("body", "metadata"),
        ),
        Hostile(
            "10,000 metrics",
            "POST",
            "/v1/runs/{run}/steps",
            as_json({"step": 1, "metrics": many_metrics}),
            422,
            "invalid-request",
            ("body", "metrics"),
        ),
        Hostile(
            "100,000 param groups (compact, within the body limit)",
            "PUT",
            "/v1/runs/{new}",
            as_json(new_run_body(param_groups=[1] * 100_000)),
            422,
            "invalid-request",
            ("body", "param_groups"),
        ),
        Hostile(
            "an array of 100,000 in a step report",
            "POST",
            "/v1/runs/{run}/steps",
            as_json(long_array),
            422,
            "invalid-request",
            ("body", "extra"),
        ),
        Hostile(
            "preview of 10^12 steps",
            "POST",
            "/v1/preview",
            as_json({**new_run_body(), "steps": 10**12}),
            422,
            "invalid-request",
            ("body", "steps"),
        ),
        Hostile(
            "a 900 KB worker name",
            "POST",
            "/v1/runs/{run}/steps",
            as_json({"step": 1, "worker": "w" * 900_000}),
            422,
            "invalid-request",
            ("body", "worker"),
        ),
    ]


def nesting_rows() -> list[Hostile]:
    deep_metadata = as_json(new_run_body(metadata=nested_object(600)))
    return [
        Hostile(
            "metadata 600 deep (PUT)", "PUT", "/v1/runs/{new}", deep_metadata, 400, "invalid-json"
        ),
        Hostile(
            "metadata 600 deep (PATCH)",
            "PATCH",
            "/v1/runs/{run}",
            as_json({"metadata": nested_object(600)}),
            400,
            "invalid-json",
        ),
        Hostile(
            "a parameter 600 deep (preview)",
            "POST",
            "/v1/preview",
            as_json(
                {**new_run_body(), "steps": 3, "scheduler": {**STEP_LR, "x": nested_object(600)}}
            ),
            400,
            "invalid-json",
        ),
        Hostile(
            "a body 5,000 deep",
            "PUT",
            "/v1/runs/{new}",
            b"[" * 5000 + b"]" * 5000,
            400,
            "invalid-json",
        ),
        Hostile(
            "5,000 unclosed [", "POST", "/v1/runs/{run}/steps", b"[" * 5000, 400, "invalid-json"
        ),
        Hostile(
            "metadata at the depth limit",
            "PUT",
            "/v1/runs/{new}",
            as_json(new_run_body(metadata=nested_object(31))),
            201,
            "",
        ),
    ]


def id_rows() -> list[Hostile]:
    body = as_json(new_run_body())
    ids = {
        "NUL": "%00",
        "newline": "%0a",
        "RTL mark": "%E2%80%8F",
        "emoji": "%F0%9F%98%80",
        "129 characters": "a" * 129,
        "invalid UTF-8": "%FF",
        "a space": "a%20b",
        "a backslash": "a%5Cb",
    }
    rows = [
        Hostile(
            f"run id with {name}",
            method,
            f"/v1/runs/{run_id}",
            payload,
            422,
            "invalid-request",
            ("path", "run_id"),
        )
        for name, run_id in ids.items()
        for method, payload in (("GET", None), ("PUT", body))
    ]
    # ".." and "%2F" never reach the route: ".." is a path segment the router does not match,
    # and an encoded slash is a slash to it; no run can be named either way.
    rows += [
        Hostile("run id ..", "PUT", "/v1/runs/..", body, 404, "not-found"),
        Hostile("run id %2F", "PUT", "/v1/runs/a%2Fb", body, 404, "not-found"),
        Hostile(
            "run-id prefix with NUL",
            "GET",
            "/v1/runs?prefix=a%00",
            None,
            422,
            "invalid-request",
            ("query", "prefix"),
        ),
        Hostile(
            "run-id prefix with a quote",
            "GET",
            "/v1/runs?prefix=%27",
            None,
            422,
            "invalid-request",
            ("query", "prefix"),
        ),
    ]
    return rows


EXPRESSION_ESCAPES = [
    "__import__('os')",
    "__import__('os').system('true')",
    "().__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "epoch.__class__",
    "(1).__class__.__mro__",
    "math.__dict__",
    "math.__loader__",
    "lambda: 1",
    "(lambda: 1)()",
    "[x for x in ()]",
    "(x for x in ())",
    "{x: 1 for x in ()}",
    "9**9**9**9",
    "'a'*10**9",
    "10**10**10",
    "open('x')",
    "eval('1')",
    "exec('1')",
    "getattr(epoch, 'real')",
    "globals()",
    "__builtins__",
    "epoch[0]",
    "f'{epoch}'",
    "(y := 1)",
    "min(*[1, 2])",
    "log(epoch, base=2)",
    "epoch if 1 else __import__('os')",
    "1 if epoch else ().__class__",
    "epoch @ epoch",
    "epoch << 10000",
    "~epoch",
    "epoch is 1",
    "epoch in (1,)",
    "...",
    "None",
    "True",
    "b'x'",
    "1j",
    "epoch\x00",
    "epoch\n__import__('os')",
    "epoch; import os",
    "import os",
    "1" * 100_000,
    "(" * 1000 + "1" + ")" * 1000,
    "-" * 100_000 + "1",
    "",
    "   ",
]


def expression_rows() -> list[Hostile]:
    rows = [
        Hostile(
            f"lr_lambda {source[:40]!r}",
            "PUT",
            "/v1/runs/{new}",
            lambda_run(source),
            422,
            "invalid-request",
            tuple(LR_LAMBDA_LOC),
        )
        for source in EXPRESSION_ESCAPES
    ]
    for value in (1, None, True, {"code": "1"}, [["epoch"]]):
        rows.append(
            Hostile(
                f"lr_lambda {value!r}",
                "PUT",
                "/v1/runs/{new}",
                lambda_run(value),
                422,
                "invalid-request",
                ("body", "scheduler"),
            )
        )
    cyclic = {
        "type": "CyclicLR",
        "params": {
            "base_lr": 0.01,
            "max_lr": 0.1,
            "scale_fn": "x.__class__",
            "cycle_momentum": False,
        },
    }
    rows.append(
        Hostile(
            "scale_fn x.__class__ (preview)",
            "POST",
            "/v1/preview",
            as_json({"scheduler": cyclic, "param_groups": GROUPS, "steps": 3}),
            422,
            "invalid-request",
            ("body", "scheduler", "params", "scale_fn"),
        )
    )
    return rows


def json_rows() -> list[Hostile]:
    return [
        Hostile("{bad", "PUT", "/v1/runs/{new}", b"{bad", 400, "invalid-json"),
        Hostile("{bad (steps)", "POST", "/v1/runs/{run}/steps", b"{bad", 400, "invalid-json"),
        Hostile("cut short", "POST", "/v1/runs/{run}/steps", b'{"step": ', 400, "invalid-json"),
        Hostile(
            "invalid UTF-8",
            "POST",
            "/v1/runs/{run}/steps",
            b'{"step": 1, "worker": "\xff"}',
            400,
            "invalid-json",
        ),
        Hostile(
            "an encoded surrogate",
            "PATCH",
            "/v1/runs/{run}",
            b'{"metadata": {"k": "\xed\xa0\x80"}}',
            400,
            "invalid-json",
        ),
        Hostile(
            "UTF-16",
            "PATCH",
            "/v1/runs/{run}",
            '{"metadata": {}}'.encode("utf-16"),
            400,
            "invalid-json",
        ),
        Hostile(
            "a 5,000-digit int",
            "POST",
            "/v1/runs/{run}/steps",
            b'{"step": ' + b"9" * 5000 + b"}",
            400,
            "invalid-json",
        ),
        Hostile(
            "two documents",
            "POST",
            "/v1/runs/{run}/steps",
            b'{"step": 1} {"step": 2}',
            400,
            "invalid-json",
        ),
        Hostile(
            "text/plain",
            "POST",
            "/v1/runs/{run}/steps",
            b'{"step": 1}',
            415,
            "unsupported-media-type",
            content_type="text/plain",
        ),
        Hostile(
            "no Content-Type",
            "PUT",
            "/v1/runs/{new}",
            as_json(new_run_body()),
            415,
            "unsupported-media-type",
            content_type=None,
        ),
        Hostile(
            "a form",
            "POST",
            "/v1/preview",
            b"steps=1",
            415,
            "unsupported-media-type",
            content_type="application/x-www-form-urlencoded",
        ),
        Hostile(
            "an empty body", "POST", "/v1/runs/{run}/steps", b"", 422, "invalid-request", ("body",)
        ),
        Hostile(
            "a lone surrogate escape",
            "PATCH",
            "/v1/runs/{run}",
            b'{"metadata": {"k": "\\ud800"}}',
            422,
            "invalid-request",
            ("body", "metadata"),
        ),
    ]


def invalid(name: str, method: str, path: str, body: bytes | None, *loc: str | int) -> Hostile:
    """A row refused with 422 naming the field at ``loc``."""
    return Hostile(name, method, path, body, 422, "invalid-request", loc)


def with_nan(document: dict[str, Any], token: str) -> bytes:
    """``document`` as JSON with the string "NAN" replaced by a bare token (NaN, Infinity)."""
    return as_json(document).replace(b'"NAN"', token.encode())


def value_rows() -> list[Hostile]:
    steps = "/v1/runs/{run}/steps"
    raw_steps = (
        b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1", b"0", b"1.5", b'"1"', b"true",
        b"null", b"[1]", b"{}", b"9223372036854775808", b"100000000000000000000000000000",
    )  # fmt: skip
    rows = [
        invalid(f"step {raw.decode()}", "POST", steps, b'{"step": ' + raw + b"}", "body", "step")
        for raw in raw_steps
    ]
    step_lr = {"type": "StepLR", "params": {"step_size": "NAN"}}
    rows += [
        invalid("metric null", "POST", steps, b'{"step": 1, "metrics": {"loss": null}}', "body"),
        invalid("metric a word", "POST", steps, b'{"step": 1, "metrics": {"loss": "low"}}', "body"),
        invalid("metric a list", "POST", steps, b'{"step": 1, "metrics": {"loss": [1]}}', "body"),
        invalid("metrics a list", "POST", steps, b'{"step": 1, "metrics": [1]}', "body", "metrics"),
        invalid(
            "lr NaN in a group",
            "PUT",
            "/v1/runs/{new}",
            with_nan(new_run_body(param_groups=[{"lr": "NAN"}]), "NaN"),
            "body",
            "param_groups",
        ),
        invalid(
            "lr a string",
            "PUT",
            "/v1/runs/{new}",
            as_json(new_run_body(param_groups=[{"lr": "0.1"}])),
            "body",
            "param_groups",
        ),
        invalid(
            "step_size NaN",
            "PUT",
            "/v1/runs/{new}",
            with_nan(new_run_body(scheduler=step_lr), "NaN"),
            "body",
            "scheduler",
        ),
        invalid(
            "step_size Infinity",
            "PUT",
            "/v1/runs/{new}",
            with_nan(new_run_body(scheduler=step_lr), "Infinity"),
            "body",
            "scheduler",
        ),
        # torch takes any int here, and so does the service: stored and stepped exactly.
        Hostile(
            "step_size 10^30",
            "PUT",
            "/v1/runs/{new}",
            as_json(new_run_body(scheduler={"type": "StepLR", "params": {"step_size": 10**30}})),
            201,
            "",
        ),
        invalid(
            "an unknown type",
            "PUT",
            "/v1/runs/{new}",
            as_json(new_run_body(scheduler={"type": "__import__", "params": {}})),
            "body",
            "scheduler",
        ),
        invalid("set lr NaN", "POST", "/v1/runs/{run}/lr", b'{"lr": [NaN]}', "body", "lr"),
        invalid("set lr 1e400", "POST", "/v1/runs/{run}/lr", b'{"lr": [1e400]}', "body", "lr"),
        invalid("rewind to -5", "POST", "/v1/runs/{run}/rewind", b'{"step": -5}', "body", "step"),
        invalid(
            "rewind to 2^63",
            "POST",
            "/v1/runs/{run}/rewind",
            b'{"step": 9223372036854775808}',
            "body",
            "step",
        ),
        invalid(
            "preview steps NaN",
            "POST",
            "/v1/preview",
            with_nan({**new_run_body(), "steps": "NAN"}, "NaN"),
            "body",
            "steps",
        ),
        invalid("lr?step=NaN", "GET", "/v1/runs/{run}/lr?step=NaN", None, "query", "step"),
        invalid(
            "lr?step=10^20", "GET", "/v1/runs/{run}/lr?step=" + "9" * 20, None, "query", "step"
        ),
        invalid("list limit 10^23", "GET", "/v1/runs?limit=1" + "0" * 23, None, "query", "limit"),
        invalid("every=0", "GET", "/v1/runs/{run}/history?every=0", None, "query", "every"),
        invalid("cursor NUL", "GET", "/v1/runs/{run}/history?cursor=%00", None, "query", "cursor"),
    ]
    # U+0000: PostgreSQL cannot store it in text or jsonb (each of these was a 500 there).
    nul = "\x00"
    rows += [
        invalid(
            "metadata value U+0000",
            "PUT",
            "/v1/runs/{new}",
            as_json(new_run_body(metadata={"k": nul})),
            "body",
            "metadata",
            "k",
        ),
        invalid(
            "metadata key U+0000",
            "PATCH",
            "/v1/runs/{run}",
            as_json({"metadata": {nul: 1}}),
            "body",
            "metadata",
        ),
        invalid(
            "param group string U+0000",
            "PUT",
            "/v1/runs/{new}",
            as_json(new_run_body(param_groups=[{"lr": 1, "name": nul}])),
            "body",
            "param_groups",
            0,
            "name",
        ),
        invalid(
            "monitor U+0000",
            "PUT",
            "/v1/runs/{new}",
            as_json(
                new_run_body(scheduler={"type": "ReduceLROnPlateau", "params": {}, "monitor": nul})
            ),
            "body",
            "scheduler",
            "monitor",
        ),
        invalid(
            "status U+0000", "PATCH", "/v1/runs/{run}", as_json({"status": nul}), "body", "status"
        ),
        invalid(
            "worker U+0000", "POST", steps, as_json({"step": 1, "worker": nul}), "body", "worker"
        ),
        invalid(
            "metric name U+0000",
            "POST",
            steps,
            as_json({"step": 1, "metrics": {nul: 1}}),
            "body",
            "metrics",
        ),
        invalid(
            "lr reason U+0000",
            "POST",
            "/v1/runs/{run}/lr",
            as_json({"lr": [1.0], "reason": nul}),
            "body",
            "reason",
        ),
    ]
    return rows


def hostile_rows() -> list[Hostile]:
    return [
        *size_rows(),
        *nesting_rows(),
        *id_rows(),
        *expression_rows(),
        *json_rows(),
        *value_rows(),
    ]


def process_tree_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and its children (uvicorn's workers, when there are any)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += process_tree_rss_kb(int(child))
    return total


def refusal_of(answer: httpx.Response, row: Hostile) -> str | None:
    """What is wrong with ``answer`` for ``row``; None when it is the answer the row needs."""
    if answer.status_code != row.status:
        return f"status {answer.status_code}, wanted {row.status}: {answer.text[:200]}"
    if row.status < 300:
        return None
    if answer.headers.get("content-type") != "application/problem+json":
        return f"content-type {answer.headers.get('content-type')}"
    problem = answer.json()
    if problem.get("type") != f"urn:lrkeeper:problem:{row.slug}":
        return f"type {problem.get('type')}, wanted {row.slug}"
    if row.loc is not None:
        locations = [tuple(error["loc"][: len(row.loc)]) for error in problem.get("errors", [])]
        if row.loc not in locations:
            return f"no error at {row.loc}: {problem.get('errors')}"
    return None


def test_every_hostile_input_gets_its_4xx_and_the_server_stays_healthy(
    live_server: LiveServer, reliability: ReliabilityLog
) -> None:
    assert live_server.process is not None
    rows = hostile_rows()
    with httpx.Client(base_url=live_server.base_url, timeout=60) as client:
        run_id = f"hostile-{uuid.uuid4().hex[:12]}"
        assert client.put(f"/v1/runs/{run_id}", json=new_run_body()).status_code == 201
        rss_before = process_tree_rss_kb(live_server.process.pid)
        failures = []
        for row in rows:
            path = row.path.format(run=run_id, new=f"hostile-{uuid.uuid4().hex[:12]}")
            headers = {"content-type": row.content_type} if row.content_type else {}
            answer = client.request(row.method, path, content=row.body, headers=headers)
            if (wrong := refusal_of(answer, row)) is not None:
                failures.append(f"{row.name}: {wrong}")
        rss_after = process_tree_rss_kb(live_server.process.pid)
        assert client.get("/healthz").status_code == 200
        # Nothing any row sent moved the run.
        assert client.get(f"/v1/runs/{run_id}").json()["step"] == 0
    assert failures == []
    assert rss_after - rss_before < RSS_GROWTH_BOUND_KB, (rss_before, rss_after)
    assert rss_after < RSS_BOUND_KB, rss_after
    backend: Backend = live_server.backend
    reliability.record(
        f"hostile inputs ({backend})",
        inputs=len(rows),
        failures=len(failures),
        rss_growth_mib=round((rss_after - rss_before) / 1024, 1),
        rss_mib=round(rss_after / 1024),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_bodies_as_deep_as_the_highest_depth_setting_are_served_without_a_500(
    server_factory: ServerPool, backend: Backend
) -> None:
    # At LRKEEPER_MAX_JSON_DEPTH's ceiling every walk after the check (pydantic, the
    # metadata measure, the codec on the way in and out, the database's JSON) must fit.
    ceiling = MAX_JSON_DEPTH_CEILING
    server = server_factory(backend, environment={"LRKEEPER_MAX_JSON_DEPTH": str(ceiling)})
    run_id = f"hostile-{uuid.uuid4().hex[:12]}"
    # The body's own object is one level, metadata's value the rest.
    deepest = nested_object(ceiling - 1)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        created = client.put(f"/v1/runs/{run_id}", json=new_run_body(metadata=deepest))
        assert created.status_code == 201, created.text[:300]
        patched = client.patch(f"/v1/runs/{run_id}", json={"metadata": deepest})
        assert patched.status_code == 200, patched.text[:300]
        assert client.get(f"/v1/runs/{run_id}").json()["metadata"] == deepest
        # An unknown parameter, two levels down (body, scheduler): refused by name.
        scheduler = {**STEP_LR, "x": nested_object(ceiling - 2)}
        preview = client.post(
            "/v1/preview", json={**new_run_body(), "steps": 2, "scheduler": scheduler}
        )
        assert preview.status_code == 422, preview.text[:300]
        too_deep = client.patch(f"/v1/runs/{run_id}", json={"metadata": nested_object(ceiling)})
        assert too_deep.status_code == 400, too_deep.text[:300]
        assert f"LRKEEPER_MAX_JSON_DEPTH ({ceiling})" in too_deep.json()["detail"]


_ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["\x00", "NaN", "Infinity", "-Infinity", "\u202e", "😀", "epoch", "__import__('os')"]
)
_ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**300])
    | st.floats()
    | _ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_ANY_TEXT, children, max_size=4)
    ),
    max_leaves=30,
)
# Each target: (method, path, a valid body, the keys down to the field replaced).
_TARGETS: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("PUT", "/v1/runs/{new}", new_run_body(), ("scheduler",)),
    ("PUT", "/v1/runs/{new}", new_run_body(), ("scheduler", "params")),
    ("PUT", "/v1/runs/{new}", new_run_body(), ("scheduler", "params", "step_size")),
    ("PUT", "/v1/runs/{new}", new_run_body(), ("param_groups",)),
    ("PUT", "/v1/runs/{new}", new_run_body(), ("metadata",)),
    ("PUT", "/v1/runs/{new}", new_run_body(), ("ranks",)),
    ("POST", "/v1/runs/{run}/steps", {"step": 1}, ("step",)),
    ("POST", "/v1/runs/{run}/steps", {"step": 1}, ("metrics",)),
    ("POST", "/v1/runs/{run}/steps", {"step": 1}, ("worker",)),
    ("POST", "/v1/runs/{run}/steps", {"step": 1}, ("rank",)),
    ("PATCH", "/v1/runs/{run}", {}, ("metadata",)),
    ("PATCH", "/v1/runs/{run}", {}, ("status",)),
    ("POST", "/v1/runs/{run}/lr", {"lr": [0.1]}, ("lr",)),
    ("POST", "/v1/runs/{run}/lr", {"lr": [0.1]}, ("reason",)),
    ("POST", "/v1/runs/{run}/rewind", {"step": 0}, ("step",)),
    ("POST", "/v1/preview", {**new_run_body(), "steps": 3}, ("steps",)),
    ("POST", "/v1/preview", {**new_run_body(), "steps": 3}, ("metrics",)),
    ("POST", "/v1/preview", {**new_run_body(), "steps": 3}, ("scheduler", "params", "gamma")),
    ("POST", "/v1/preview/chart.svg", {**new_run_body(), "steps": 3}, ("steps",)),
    ("POST", "/v1/preview/chart.png", {**new_run_body(), "steps": 3}, ("metrics",)),
]


def replaced(body: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``body`` with the value at ``keys`` replaced (copies along the way, the rest shared)."""
    head, *rest = keys
    return {**body, head: replaced(body[head], tuple(rest), value) if rest else value}


@settings(max_examples=100, derandomize=True, deadline=None)
@given(target=st.sampled_from(_TARGETS), value=_ANY_JSON)
def test_random_json_in_any_body_field_never_gets_a_5xx(
    live_server: LiveServer, target: tuple[str, str, dict[str, Any], tuple[str, ...]], value: Any
) -> None:
    method, path, body, keys = target
    run_id = f"random-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=live_server.base_url, timeout=60) as client:
        if "{run}" in path:
            assert client.put(f"/v1/runs/{run_id}", json=new_run_body()).status_code == 201
        content = json.dumps(replaced(body, keys, value))  # bare NaN / Infinity included
        answer = client.request(
            method,
            path.format(run=run_id, new=run_id),
            content=content,
            headers={"content-type": "application/json"},
        )
    assert answer.status_code < 500, (keys, content[:300], answer.text[:300])
    if answer.status_code >= 400:
        assert answer.headers["content-type"] == "application/problem+json"


# Every reading route with its query parameters (and some it does not have).
_QUERIES: list[tuple[str, tuple[str, ...]]] = [
    ("/v1/runs", ("status", "prefix", "limit", "cursor")),
    ("/v1/runs/{run}", ("x",)),
    ("/v1/runs/{run}/lr", ("step", "wait")),
    ("/v1/runs/{run}/history", ("start", "end", "limit", "cursor", "every", "points")),
    ("/v1/runs/{run}/history", ("include_superseded", "format")),
    ("/v1/runs/{run}/events", ("limit", "cursor")),
    ("/v1/runs/{run}/lr-suggestion", ("method",)),
    ("/v1/runs/{run}/chart.svg", ("scale", "start", "end", "metrics")),
    ("/v1/runs/{run}/chart.png", ("scale", "start", "end", "metrics")),
    ("/", ("status", "prefix", "cursor")),
    ("/runs/{run}", ("x",)),
]
_QUERY_VALUES = st.text(max_size=12) | st.sampled_from(
    ["\x00", "-1", "0", "1e400", "NaN", "9" * 30, "true", "csv", "log", "valley", "stale", "%00"]
)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(target=st.sampled_from(_QUERIES), data=st.data())
def test_random_query_strings_on_every_reading_route_never_get_a_5xx(
    live_server: LiveServer, target: tuple[str, tuple[str, ...]], data: st.DataObject
) -> None:
    path, names = target
    params = {name: data.draw(_QUERY_VALUES, label=name) for name in names}
    with httpx.Client(base_url=live_server.base_url, timeout=60) as client:
        run_id = f"random-{uuid.uuid4().hex[:12]}"
        assert client.put(f"/v1/runs/{run_id}", json=new_run_body()).status_code == 201
        answer = client.get(path.format(run=run_id), params=params)
    assert answer.status_code < 500, (path, params, answer.text[:300])
