"""API.md "Additions": ``GET /history?points=P`` keeps every bucket's extremes; CSV streams.

Every thinned answer is checked against the rule (service.runs.thinning's docstring)
computed here, independently, from the full history read page by page: so a stale or
missing stored block (service.runs.extremes) cannot hide behind a plausible answer.
"""

import csv
import io
import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from service.runs.extremes import WIDTHS
from tests.conftest import BACKENDS, LiveServer, ServerPool

# One catch-up's steps: its inserts stay well inside the database's 3 s statement bound.
CATCH_UP_STEPS = 10_000
PAGE_CAP = 5000  # LRKEEPER_MAX_HISTORY_LIMIT of this module's server: streams span pages
CYCLIC = {
    "type": "CyclicLR",
    "params": {"base_lr": [0.01, 0.02, 0.005], "max_lr": [0.1, 0.3, 0.05], "step_size_up": 37},
}
THREE_GROUPS = [
    {"lr": 0.01, "momentum": 0.9},
    {"lr": 0.02, "momentum": 0.85},
    {"lr": 0.005, "momentum": 0.95},
]
COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 100, "eta_min": 0.001}}
TWO_GROUPS = [{"lr": 0.1}, {"lr": 0.05}]


@pytest.fixture(scope="module", params=BACKENDS)
def thinning_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server whose catch-ups build long runs of three groups in a few reports."""
    pool = ServerPool(tmp_path_factory.mktemp(f"thinning-{request.param}"))
    environment = {
        "LRKEEPER_MAX_CATCH_UP_VALUES": str(3 * CATCH_UP_STEPS),
        "LRKEEPER_MAX_HISTORY_LIMIT": str(PAGE_CAP),
    }
    try:
        yield pool(request.param, environment=environment)
    finally:
        pool.close()


@pytest.fixture
def client(thinning_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=thinning_server.base_url, timeout=120) as http_client:
        yield http_client


def create_run(
    client: httpx.Client, scheduler: dict[str, Any], param_groups: list[dict[str, Any]]
) -> str:
    run_id = f"thin-{uuid.uuid4().hex[:12]}"
    response = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": scheduler, "param_groups": param_groups}
    )
    assert response.status_code == 201, response.text
    return run_id


def report(client: httpx.Client, run_id: str, step: int, **body: Any) -> None:
    response = client.post(f"/v1/runs/{run_id}/steps", json={"step": step, **body})
    assert response.status_code == 200, response.text


def catch_up(client: httpx.Client, run_id: str, last_step: int) -> None:
    """Reach ``last_step`` from the run's step in catch-ups of CATCH_UP_STEPS."""
    step = client.get(f"/v1/runs/{run_id}").json()["step"]
    while step < last_step:
        step = min(step + CATCH_UP_STEPS, last_step)
        report(client, run_id, step)


def full_history(client: httpx.Client, run_id: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": PAGE_CAP, **params}
    while True:
        response = client.get(f"/v1/runs/{run_id}/history", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        query["cursor"] = page["next_cursor"]


def thinned(client: httpx.Client, run_id: str, points: int, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/runs/{run_id}/history", params={"points": points, **params})
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    assert page["next_cursor"] is None
    assert page["thinned"]["points"] == points
    return page


def number(value: Any) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value, value)


def series_of(item: dict[str, Any]) -> dict[str, float]:
    """The item's series by name, NaN left out (it has no order, so it is never an extreme)."""
    values = {f"lr.{group}": value for group, value in enumerate(item["lr"])}
    values.update(
        {f"momentum.{group}": value for group, value in enumerate(item.get("momentum") or [])}
    )
    values.update({f"metrics.{name}": value for name, value in item["metrics"].items()})
    return {name: number(value) for name, value in values.items() if number(value) == number(value)}


def rule(
    items: list[dict[str, Any]], first: int, last: int, points: int, least_series: int
) -> tuple[list[int], int]:
    """The documented rule, on the full current line: (the chosen steps, the bucket width)."""
    in_range = [item for item in items if first <= item["step"] <= last]
    series = {name for item in in_range for name in series_of(item)}
    buckets = max(1, (points - 2) // (2 * max(len(series), least_series)) - 1)
    wanted = -(-(last - first + 1) // buckets)
    block = max((width for width in WIDTHS if width <= wanted), default=1)
    width = -(-wanted // block) * block
    lowest: dict[tuple[int, str], tuple[float, int]] = {}
    highest: dict[tuple[int, str], tuple[float, int]] = {}
    for item in in_range:
        step = item["step"]
        for name, value in series_of(item).items():
            key = (step // width, name)
            lowest[key] = min(lowest.get(key, (value, step)), (value, step))
            highest[key] = min(highest.get(key, (-value, step)), (-value, step))
    chosen = {first, last} | {step for _, step in lowest.values()}
    chosen |= {step for _, step in highest.values()}
    return sorted(chosen), width


def assert_follows_the_rule(
    client: httpx.Client,
    run_id: str,
    points: int,
    least_series: int,
    **params: Any,
) -> dict[str, Any]:
    current_line = full_history(client, run_id)
    first = params.get("start", 0)
    last = min(params.get("end", current_line[-1]["step"]), current_line[-1]["step"])
    page = thinned(client, run_id, points, **params)
    steps, width = rule(current_line, first, last, points, least_series)
    assert [item["step"] for item in page["items"]] == steps
    assert page["thinned"]["bucket_steps"] == width
    by_step = {item["step"]: item for item in current_line}
    assert all(item == by_step[item["step"]] for item in page["items"])
    return page


def test_thinning_keeps_every_extreme_of_a_100000_step_cyclic_run(client: httpx.Client) -> None:
    run_id = create_run(client, CYCLIC, THREE_GROUPS)
    catch_up(client, run_id, 100_000)
    full = full_history(client, run_id)
    assert len(full) == 100_001
    page = thinned(client, run_id, 1000)
    items = page["items"]
    assert len(items) <= 1000
    by_step = {item["step"]: item for item in full}
    assert all(item == by_step[item["step"]] for item in items)  # rows ⊆ the full history
    assert items[0]["step"] == 0 and items[-1]["step"] == 100_000
    width = page["thinned"]["bucket_steps"]
    kept: dict[tuple[int, str], set[float]] = {}
    for item in items:
        for name, value in series_of(item).items():
            kept.setdefault((item["step"] // width, name), set()).add(value)
    lowest: dict[tuple[int, str], float] = {}
    highest: dict[tuple[int, str], float] = {}
    for item in full:
        for name, value in series_of(item).items():
            key = (item["step"] // width, name)
            lowest[key] = min(lowest.get(key, value), value)
            highest[key] = max(highest.get(key, value), value)
    assert len(lowest) == 6 * (100_000 // width + 1)  # 3 lrs, 3 momenta, every bucket
    for key, value in lowest.items():
        assert value in kept[key] and highest[key] in kept[key], key
    assert_follows_the_rule(client, run_id, 1000, 6)
    assert_follows_the_rule(client, run_id, 300, 6, start=12_345, end=67_890)


def test_thinning_follows_rewinds_and_lr_edits(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, TWO_GROUPS)
    report(client, run_id, 5000)
    assert_follows_the_rule(client, run_id, 200, 2)
    response = client.post(f"/v1/runs/{run_id}/rewind", json={"step": 2345})
    assert response.status_code == 200, response.text
    response = client.post(f"/v1/runs/{run_id}/lr", json={"lr": [5.0, 0.0001]})
    assert response.status_code == 200, response.text
    assert_follows_the_rule(client, run_id, 200, 2)
    report(client, run_id, 2346)
    report(client, run_id, 7000)
    assert_follows_the_rule(client, run_id, 200, 2)
    assert_follows_the_rule(client, run_id, 50, 2, start=2000, end=3000)
    assert max(item["lr"][0] for item in thinned(client, run_id, 200)["items"]) > 1.0


def test_thinning_keeps_the_extremes_of_a_metric_reported_every_step(
    client: httpx.Client,
) -> None:
    run_id = create_run(client, {"type": "StepLR", "params": {"step_size": 50}}, TWO_GROUPS)
    for step in range(1, 401):
        loss: float | str = math.sin(step / 7) * (1 + step / 100)
        loss = {200: "Infinity", 333: "NaN"}.get(step, loss)
        report(client, run_id, step, metrics={"loss": loss})
    page = assert_follows_the_rule(client, run_id, 40, 2)
    losses = [number(item["metrics"]["loss"]) for item in page["items"] if item["metrics"]]
    assert math.inf in losses
    full_losses = [
        number(item["metrics"]["loss"]) for item in full_history(client, run_id) if item["metrics"]
    ]
    assert min(full_losses) in losses


def test_missing_blocks_are_filled_from_narrower_ones_and_rows(
    client: httpx.Client, thinning_server: LiveServer
) -> None:
    """A run older than step_extremes has no blocks for its early steps: same answer."""
    run_id = create_run(client, COSINE, TWO_GROUPS)
    catch_up(client, run_id, 30_000)
    engine = sa.create_engine(thinning_server.database_url)
    try:
        with engine.begin() as connection:
            run_pk = connection.execute(
                sa.text("SELECT id FROM runs WHERE run_id = :run_id"), {"run_id": run_id}
            ).scalar_one()
            connection.execute(
                sa.text(
                    "DELETE FROM step_extremes WHERE run_pk = :run_pk"
                    " AND (width IN (1024, 64) OR bucket % 3 = 0)"
                ),
                {"run_pk": run_pk},
            )
        assert_follows_the_rule(client, run_id, 300, 2)
        with engine.begin() as connection:
            connection.execute(
                sa.text("DELETE FROM step_extremes WHERE run_pk = :run_pk"), {"run_pk": run_pk}
            )
        assert_follows_the_rule(client, run_id, 300, 2)
        assert_follows_the_rule(client, run_id, 40, 2, start=777, end=4321)
    finally:
        engine.dispose()


def test_superseded_rows_are_thinned_by_the_same_rule_on_request(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, TWO_GROUPS)
    report(client, run_id, 3000)
    client.post(f"/v1/runs/{run_id}/rewind", json={"step": 1000}).raise_for_status()
    report(client, run_id, 2000)
    everything = full_history(client, run_id, include_superseded="true")
    page = thinned(client, run_id, 100, include_superseded="true")
    rows = {(item["step"], item["superseded"]): item for item in everything}
    assert all(rows[(item["step"], item["superseded"])] == item for item in page["items"])
    superseded = [item for item in page["items"] if item["superseded"]]
    assert superseded[0]["step"] == 1001 and superseded[-1]["step"] == 3000
    all_superseded = [item for item in everything if item["superseded"]]
    lowest = min(item["lr"][0] for item in all_superseded)
    assert lowest in {item["lr"][0] for item in superseded}
    # In the paged history's order: by step, and within a step in the order written.
    order = {(item["step"], item["superseded"]): index for index, item in enumerate(everything)}
    positions = [order[(item["step"], item["superseded"])] for item in page["items"]]
    assert positions == sorted(positions)


def test_a_run_at_step_zero_thins_to_its_one_row(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, TWO_GROUPS)
    page = thinned(client, run_id, 2)
    assert [item["step"] for item in page["items"]] == [0]
    assert thinned(client, run_id, 10, start=5)["items"] == []


def test_a_thinned_answer_renders_as_csv_with_the_usual_columns(client: httpx.Client) -> None:
    run_id = create_run(client, CYCLIC, THREE_GROUPS)
    report(client, run_id, 500)
    response = client.get(f"/v1/runs/{run_id}/history", params={"points": 50, "format": "csv"})
    assert response.status_code == 200, response.text
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:7] == ["step", "lr_0", "lr_1", "lr_2", "momentum_0", "momentum_1", "momentum_2"]
    json_steps = [item["step"] for item in thinned(client, run_id, 50)["items"]]
    assert [int(row[0]) for row in rows[1:]] == json_steps
    assert "X-Next-Cursor" not in response.headers


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"points": 1}, "points"),
        ({"points": 0}, "points"),
        ({"points": 10_001}, "points"),
        ({"points": "many"}, "points"),
        ({"points": 100, "cursor": "MTox"}, "cursor"),
        ({"points": 100, "limit": 10}, "limit"),
        ({"points": 100, "every": 2}, "every"),
        ({"points": 100, "start": 9, "end": 3}, "end"),
    ],
)
def test_bad_thinning_queries_are_refused_naming_the_field(
    client: httpx.Client, params: dict[str, Any], field: str
) -> None:
    run_id = create_run(client, COSINE, TWO_GROUPS)
    response = client.get(f"/v1/runs/{run_id}/history", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert ["query", field] in [error["loc"] for error in response.json()["errors"]]


def test_csv_without_limit_streams_the_whole_current_line_under_one_header(
    client: httpx.Client,
) -> None:
    run_id = create_run(client, COSINE, TWO_GROUPS)
    last_step = 2 * PAGE_CAP + 123
    report(client, run_id, 2000)
    client.post(f"/v1/runs/{run_id}/rewind", json={"step": 1000}).raise_for_status()
    # A catch-up's metrics go on its last row: on the stream's last page only.
    report(client, run_id, last_step, metrics={"loss": 0.5})
    lines: list[str] = []
    with client.stream("GET", f"/v1/runs/{run_id}/history", params={"format": "csv"}) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        assert "X-Next-Cursor" not in response.headers
        lines.extend(response.iter_lines())
    rows = list(csv.reader(lines))
    header = rows[0]
    assert header == ["step", "lr_0", "lr_1", "loss", "worker", "recorded_at", "superseded"]
    assert rows.count(header) == 1
    assert [int(row[0]) for row in rows[1:]] == list(range(last_step + 1))
    full = full_history(client, run_id)
    assert [row[1] for row in rows[1:]] == [str(item["lr"][0]) for item in full]
    assert [row[3] for row in rows[1:]] == [""] * last_step + ["0.5"]
    assert {row[6] for row in rows[1:]} == {"false"}


def test_csv_with_limit_stays_one_page_with_the_next_cursor(client: httpx.Client) -> None:
    run_id = create_run(client, COSINE, TWO_GROUPS)
    report(client, run_id, 30)
    response = client.get(f"/v1/runs/{run_id}/history", params={"format": "csv", "limit": 10})
    assert response.status_code == 200
    assert len(response.text.splitlines()) == 11
    assert response.headers["X-Next-Cursor"]
    assert response.headers["content-length"]
