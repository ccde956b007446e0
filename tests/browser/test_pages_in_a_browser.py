"""The pages as a person uses them, in chromium: filter, open a run, read its chart, hover an
event, zoom, switch to a log axis, compare two runs, download the CSV, preview a config, and
read the API docs, all with nothing reachable but the service.
"""

import csv
import io
import math
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import OfflinePage
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

PLATEAU = {"type": "ReduceLROnPlateau", "params": {"patience": 1, "factor": 0.5}}
# A loss that stops improving after step 3: cuts at steps 5 and 7 (patience 1).
LOSSES = [1.0, 0.8, 0.7, 0.9, 0.9, 0.95, 0.96, 0.97, 0.98]
LONG_RUN_STEPS = 5000


def create(http: httpx.Client, prefix: str, scheduler: dict[str, Any], steps: int = 0) -> str:
    run_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.9}]
    answer = http.put(f"/v1/runs/{run_id}", json={"scheduler": scheduler, "param_groups": groups})
    assert answer.status_code == 201, answer.text
    if steps:
        assert http.post(f"/v1/runs/{run_id}/steps", json={"step": steps}).status_code == 200
    return run_id


@pytest.fixture(scope="module")
def runs(sqlite_server: LiveServer) -> dict[str, str]:
    """A plateau run with cuts, a manual lr change and a rewind; a long cosine run; a
    one-cycle run (momentum cycles); all under one prefix so the list can be filtered."""
    prefix = f"browser-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=sqlite_server.base_url, timeout=60) as http:
        plateau = create(http, prefix, PLATEAU)
        for step, loss in enumerate(LOSSES, 1):
            body = {"step": step, "metrics": {"val_loss": loss}}
            assert http.post(f"/v1/runs/{plateau}/steps", json=body).status_code == 200
        assert http.post(f"/v1/runs/{plateau}/rewind", json={"step": 6}).status_code == 200
        http.post(f"/v1/runs/{plateau}/lr", json={"lr": [0.02, 0.002], "reason": "by hand"})
        for step in (7, 8):
            body = {"step": step, "metrics": {"val_loss": 0.5 - step / 100}}
            assert http.post(f"/v1/runs/{plateau}/steps", json=body).status_code == 200
        cosine = create(
            http, prefix, {"type": "CosineAnnealingLR", "params": {"T_max": 100}}, LONG_RUN_STEPS
        )
        one_cycle = create(
            http, prefix, {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": 50}}, 20
        )
        http.patch(f"/v1/runs/{one_cycle}", json={"status": "finished"})
    return {"prefix": prefix, "plateau": plateau, "cosine": cosine, "one_cycle": one_cycle}


def chart_traces(view: OfflinePage, loads: int = 1) -> list[dict[str, Any]]:
    """The traces plotly drew, once the chart has loaded ``loads`` times."""
    view.page.wait_for_function(
        f"document.getElementById('chart').dataset.loaded === '{loads}'", timeout=30_000
    )
    traces: list[dict[str, Any]] = view.page.evaluate(
        "Array.from(document.getElementById('chart').data, t => ({name: t.name, x: Array.from(t.x),"
        " y: Array.from(t.y), text: t.text ? Array.from(t.text) : null, yaxis: t.yaxis || 'y',"
        " opacity: t.opacity, shape: t.line ? t.line.shape : null}))"
    )
    return traces


def named(traces: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(trace for trace in traces if trace["name"] == name)


def history(base_url: str, run_id: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query = {"limit": 10000, **params}
    with httpx.Client(base_url=base_url, timeout=60) as http:
        while True:
            page = http.get(f"/v1/runs/{run_id}/history", params=query).json()
            items.extend(page["items"])
            if not page["next_cursor"]:
                return items
            query["cursor"] = page["next_cursor"]


def test_the_runs_page_filters_and_opens_a_run(
    offline_page: OfflinePage, runs: dict[str, str]
) -> None:
    page = offline_page.page
    page.goto("/")
    page.fill("input[name=prefix]", runs["prefix"])
    page.click("text=filter")
    rows = page.locator("tr[data-run-id]")
    assert rows.count() == 3
    assert rows.first.get_attribute("data-run-id") == runs["one_cycle"]  # newest first
    page.select_option("select[name=status]", "finished")
    page.click("text=filter")
    assert page.locator("tr[data-run-id]").count() == 1
    assert "20 / 50" in page.locator("tr[data-run-id]").inner_text()
    offline_page.screenshot("runs-filtered")
    page.click(f"a[href='/runs/{runs['one_cycle']}']")
    page.wait_for_url(f"**/runs/{runs['one_cycle']}")
    traces = chart_traces(offline_page)
    assert [trace["name"] for trace in traces] == [
        "lr group 0",
        "lr group 1",
        "momentum group 0",
        "momentum group 1",
    ]
    assert named(traces, "momentum group 0")["yaxis"] == "y3"


def test_a_run_chart_draws_every_group_as_steps_with_metric_events_and_superseded_history(
    offline_page: OfflinePage, runs: dict[str, str], sqlite_server: LiveServer
) -> None:
    page = offline_page.page
    page.goto(f"/runs/{runs['plateau']}")
    traces = chart_traces(offline_page)
    current = history(sqlite_server.base_url, runs["plateau"])
    for group in (0, 1):
        lr = named(traces, f"lr group {group}")
        assert lr["shape"] == "hv"  # drawn as steps: a cut is a vertical drop
        assert lr["x"] == [item["step"] for item in current]
        assert lr["y"] == [item["lr"][group] for item in current]
        superseded = named(traces, f"superseded lr group {group}")
        assert superseded["opacity"] < 1
        assert superseded["x"] == [7, 8, 9]  # the rewind to step 6 superseded them
    loss = named(traces, "val_loss")
    assert loss["yaxis"] == "y2"
    assert loss["x"] == [item["step"] for item in current if "val_loss" in item["metrics"]]
    events = named(traces, "events")
    kinds = {text.split(" at step ")[0] for text in events["text"]}
    assert {"plateau_reduction", "rewind", "lr_set"} <= kinds
    offline_page.screenshot("run-plateau")


def test_hovering_an_event_names_it(offline_page: OfflinePage, runs: dict[str, str]) -> None:
    page = offline_page.page
    page.goto(f"/runs/{runs['plateau']}")
    traces = chart_traces(offline_page)
    events = named(traces, "events")
    index = next(i for i, text in enumerate(events["text"]) if text.startswith("plateau_reduction"))
    step, lr = events["x"][index], events["y"][index]
    x, y = page.evaluate(
        """([step, lr]) => {
            const chart = document.getElementById('chart');
            const layout = chart._fullLayout, box = chart.getBoundingClientRect();
            return [box.left + layout._size.l + layout.xaxis.l2p(step),
                    box.top + layout._size.t + layout.yaxis.l2p(lr)];
        }""",
        [step, lr],
    )
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y)
    hover = page.locator(".hoverlayer .hovertext")
    hover.first.wait_for(state="visible")
    assert f"plateau_reduction at step {step}" in (hover.first.text_content() or "")
    offline_page.screenshot("run-event-hover")


def test_zooming_fetches_finer_history_for_the_range(
    offline_page: OfflinePage, runs: dict[str, str], sqlite_server: LiveServer
) -> None:
    page = offline_page.page
    page.goto(f"/runs/{runs['cosine']}")
    whole = named(chart_traces(offline_page), "lr group 0")
    assert whole["x"][0] == 0 and whole["x"][-1] == LONG_RUN_STEPS
    plot = page.locator("#chart .nsewdrag").first.bounding_box()
    assert plot is not None
    middle = plot["y"] + plot["height"] / 2
    with page.expect_request(lambda request: "start=" in request.url) as zoomed:
        page.mouse.move(plot["x"] + plot["width"] * 0.40, middle)
        page.mouse.down()
        page.mouse.move(plot["x"] + plot["width"] * 0.45, middle + 2, steps=5)
        page.mouse.up()
    query = httpx.URL(zoomed.value.url).params
    start, end = int(query["start"]), int(query["end"])
    assert 0 < start < end < LONG_RUN_STEPS
    close = named(chart_traces(offline_page, loads=2), "lr group 0")
    assert all(start <= step <= end for step in close["x"])
    assert len(close["x"]) > len([step for step in whole["x"] if start <= step <= end])
    rows = {item["step"]: item["lr"][0] for item in history(sqlite_server.base_url, runs["cosine"])}
    assert all(rows[step] == lr for step, lr in zip(close["x"], close["y"], strict=True))
    offline_page.screenshot("run-zoomed")
    page.click(".reset-zoom")
    assert named(chart_traces(offline_page, loads=3), "lr group 0")["x"][-1] == LONG_RUN_STEPS


def test_the_lr_axis_switches_to_log(offline_page: OfflinePage, runs: dict[str, str]) -> None:
    page = offline_page.page
    page.goto(f"/runs/{runs['cosine']}")
    chart_traces(offline_page)
    page.check("input[name=scale][value=log]")
    page.wait_for_function("document.getElementById('chart')._fullLayout.yaxis.type === 'log'")


def test_two_runs_picked_on_the_list_are_compared_on_one_chart(
    offline_page: OfflinePage, runs: dict[str, str]
) -> None:
    page = offline_page.page
    page.goto(f"/?prefix={runs['prefix']}")
    page.check(f"input[value='{runs['plateau']}']")
    page.check(f"input[value='{runs['cosine']}']")
    page.click("#compare-button")
    page.wait_for_url("**/compare?**")
    names = [trace["name"] for trace in chart_traces(offline_page)]
    for run_id in (runs["plateau"], runs["cosine"]):
        assert f"{run_id} · lr group 0" in names
    offline_page.screenshot("compare")


def test_the_csv_download_holds_the_whole_history(
    offline_page: OfflinePage, runs: dict[str, str], sqlite_server: LiveServer
) -> None:
    page = offline_page.page
    page.goto(f"/runs/{runs['cosine']}")
    with page.expect_download() as download:
        page.click("#csv-download")
    path = download.value.path()
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [int(row["step"]) for row in rows] == list(range(LONG_RUN_STEPS + 1))
    expected = history(sqlite_server.base_url, runs["cosine"])
    assert [float(row["lr_1"]) for row in rows] == [item["lr"][1] for item in expected]


def test_a_config_typed_on_the_preview_page_is_drawn(offline_page: OfflinePage) -> None:
    page = offline_page.page
    page.goto("/preview")
    page.fill("#scheduler", '{"type": "StepLR", "params": {"step_size": 10, "gamma": 0.5}}')
    page.fill("#param_groups", '[{"lr": 0.4}]')
    page.fill("#steps", "40")
    page.click("text=draw")
    lr = named(chart_traces(offline_page), "lr group 0")
    assert lr["x"] == list(range(41))
    assert lr["y"][:11] == [0.4] * 10 + [0.2]
    offline_page.screenshot("preview")
    page.fill("#scheduler", '{"type": "StepLR", "params": {}}')
    page.click("text=draw")
    assert "scheduler.params.step_size" in page.locator("[role=alert]").inner_text()


def test_the_api_docs_render_with_no_internet(offline_page: OfflinePage) -> None:
    page = offline_page.page
    document = page.request.get("/openapi.json").json()
    operations = sum(len(methods) for methods in document["paths"].values())
    page.goto("/docs")
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() == operations
    assert page.get_by_text("/v1/runs/{run_id}/steps").count() >= 1
    offline_page.screenshot("docs")
    page.goto("/redoc")
    page.locator("h2", has_text="Report Step").first.wait_for()
    offline_page.screenshot("redoc")


README_CHART = Path(__file__).with_name("readme") / "run-chart.png"


def test_the_readme_chart_is_drawn_from_a_real_run(
    offline_page: OfflinePage, sqlite_server: LiveServer
) -> None:
    """A plateau run of 120 epochs with a manual lr change and a rewind, drawn by the run page;
    the picture the README shows (committed; this test redraws it)."""
    plateau = {"type": "ReduceLROnPlateau", "params": {"patience": 4, "factor": 0.5}}
    with httpx.Client(base_url=sqlite_server.base_url, timeout=60) as http:
        run_id = create(http, "readme", plateau)

        def report(step: int, shift: float) -> None:
            loss = 0.4 + shift + 1.6 * math.exp(-step / 18) + 0.03 * math.sin(step * 1.7)
            body = {"step": step, "metrics": {"val_loss": round(loss, 4)}}
            assert http.post(f"/v1/runs/{run_id}/steps", json=body).status_code == 200

        for step in range(1, 101):
            report(step, 0.0)
            if step == 60:
                http.post(f"/v1/runs/{run_id}/lr", json={"lr": [0.08, 0.008], "reason": "warm up"})
        assert http.post(f"/v1/runs/{run_id}/rewind", json={"step": 90}).status_code == 200
        for step in range(91, 121):
            report(step, -0.05)
    page = offline_page.page
    page.goto(f"/runs/{run_id}")
    traces = chart_traces(offline_page)
    assert named(traces, "lr group 0")["x"][-1] == 120
    assert named(traces, "superseded lr group 0")["x"] == list(range(91, 101))
    README_CHART.parent.mkdir(exist_ok=True)
    page.locator(".chart").screenshot(path=README_CHART)
    assert README_CHART.stat().st_size > 10_000


def test_a_range_test_page_draws_loss_against_lr_with_every_suggestion(
    offline_page: OfflinePage, sqlite_server: LiveServer
) -> None:
    range_test = {
        "type": "LRRangeTest",
        "params": {"start_lr": 1e-4, "end_lr": 1.0, "num_steps": 60},
    }
    with httpx.Client(base_url=sqlite_server.base_url, timeout=60) as http:
        run_id = create(http, "range", range_test)
        for step in range(1, 61):
            # Falls fastest around lr 1e-2, bottoms out near 1e-1, then blows up.
            loss = 2.0 - math.tanh((step - 25) / 8) + (0.02 * (step - 45) ** 2 if step > 45 else 0)
            body = {"step": step, "metrics": {"loss": loss}}
            answer = http.post(f"/v1/runs/{run_id}/steps", json=body)
            assert answer.status_code == 200, answer.text
            if answer.json().get("stop"):
                break
        expected = http.get(f"/v1/runs/{run_id}/lr-suggestion").json()
    page = offline_page.page
    page.goto(f"/runs/{run_id}")
    page.wait_for_function("document.getElementById('suggestion-chart').dataset.loaded === '1'")
    names = page.evaluate(
        "Array.from(document.getElementById('suggestion-chart').data, t => t.name)"
    )
    assert names[0] == "smoothed loss"
    for method, lr in expected["suggestions"].items():
        assert f"{method}: {lr:.3g}" in [name.replace("e-", "e-") for name in names] or any(
            name.startswith(f"{method}: ") for name in names
        )
    assert (
        page.evaluate("document.getElementById('suggestion-chart')._fullLayout.xaxis.type") == "log"
    )
    offline_page.screenshot("range-test")
