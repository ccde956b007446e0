"""The pages' HTML as a person's browser gets it: the run list, a run, compare, preview, docs.

What the browser then draws with it is tests/browser's subject; here, what the
server puts in the page: readable values, the newest runs first, the state in
words, escaped user text, HTML 404s, and assets that need no internet.
"""

import gzip
import json
import re
import uuid
from html.parser import HTMLParser

import httpx
import pytest

from tests.conftest import ACCESS_TOKENS, LiveServer, ServerFactory

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 10}}


class PageParser(HTMLParser):
    """The links, script sources and table rows of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.row_ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        if tag == "script" and attributes.get("src"):
            self.scripts.append(attributes["src"] or "")
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes["href"] or "")
        if tag == "tr" and attributes.get("data-run-id"):
            self.row_ids.append(attributes["data-run-id"] or "")


def parse(response: httpx.Response, status: int = 200) -> PageParser:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    parser = PageParser()
    parser.feed(response.text)
    return parser


def create_run(
    client: httpx.Client,
    steps: int,
    *,
    scheduler: dict[str, object] = COSINE,
    groups: list[dict[str, float]] | None = None,
    prefix: str = "page",
) -> str:
    run_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
    body = {"scheduler": scheduler, "param_groups": groups or [{"lr": 0.1}]}
    assert client.put(f"/v1/runs/{run_id}", json=body).status_code == 201
    if steps:
        assert client.post(f"/v1/runs/{run_id}/steps", json={"step": steps}).status_code == 200
    return run_id


def test_the_runs_page_lists_the_newest_first_with_readable_values(client: httpx.Client) -> None:
    prefix = f"list-{uuid.uuid4().hex[:6]}"
    # 0.1 * 0.1 is 0.010000000000000002 in floats: the page shows 0.01, the title the exact.
    older = create_run(client, 0, scheduler={"type": "ConstantLR", "params": {}}, prefix=prefix)
    client.post(f"/v1/runs/{older}/lr", json={"lr": [0.1 * 0.1]})
    one_cycle = {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": 20}}
    groups = [{"lr": 0.1, "momentum": 0.9}]
    newer = create_run(client, 3, scheduler=one_cycle, groups=groups, prefix=prefix)
    response = client.get("/", params={"prefix": prefix})
    page = parse(response)
    assert page.row_ids == [newer, older]
    assert f"/runs/{older}" in page.links
    assert ">0.01<" in response.text
    assert 'title="0.010000000000000002"' in response.text
    assert "3 / 20" in response.text  # progress where the schedule has a known length
    assert "just now" in response.text or " s ago" in response.text


def test_the_runs_page_filters_by_status_and_pages_through_every_run(
    client: httpx.Client,
) -> None:
    prefix = f"paging-{uuid.uuid4().hex[:6]}"
    created = [create_run(client, 0, prefix=prefix) for _ in range(53)]
    client.patch(f"/v1/runs/{created[0]}", json={"status": "finished"})
    seen: list[str] = []
    url: str | None = "/?" + httpx.QueryParams({"prefix": prefix}).__str__()
    while url:
        page = parse(client.get(url))
        seen.extend(page.row_ids)
        url = next((link for link in page.links if "cursor=" in link), None)
        if url:
            url = url.replace("&amp;", "&")
    assert seen == created[::-1]
    finished = parse(client.get("/", params={"prefix": prefix, "status": "finished"}))
    assert finished.row_ids == [created[0]]
    nothing = client.get("/", params={"prefix": prefix, "status": "failed"})
    assert parse(nothing).row_ids == []
    assert "No runs match this filter" in nothing.text


@pytest.mark.parametrize(
    ("scheduler", "steps", "words"),
    [
        (
            {"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 5}},
            7,
            "T_cur 2 of T_i 5: the next warm restart in 3 step(s)",
        ),
        (
            {"type": "CyclicLR", "params": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4}},
            6,
            "cycle 1, falling: 75% through a cycle of 8 steps",
        ),
        (
            {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": 100}},
            10,
            "phase 1 of 2 (warm-up), step 10 of 100",
        ),
    ],
)
def test_a_run_page_says_where_the_schedule_stands(
    client: httpx.Client, scheduler: dict[str, object], steps: int, words: str
) -> None:
    groups = [{"lr": 0.1, "momentum": 0.9}]
    run_id = create_run(client, steps, scheduler=scheduler, groups=groups)
    assert words in client.get(f"/runs/{run_id}").text


def test_a_plateau_run_page_shows_best_bad_epochs_and_cooldown(client: httpx.Client) -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {"patience": 0, "cooldown": 2}}
    run_id = create_run(client, 0, scheduler=plateau)
    for step, loss in ((1, 1.0), (2, 2.0)):
        body = {"step": step, "metrics": {"val_loss": loss}}
        assert client.post(f"/v1/runs/{run_id}/steps", json=body).status_code == 200
    text = client.get(f"/runs/{run_id}").text
    assert "best val_loss so far: 1 (mode min)" in text
    assert "cooldown: 2 step(s) left" in text
    assert "plateau_reduction" in text  # the event, in the events table


def test_a_run_page_escapes_what_users_wrote_and_links_to_its_data(client: httpx.Client) -> None:
    run_id = create_run(client, 5)
    client.post(f"/v1/runs/{run_id}/lr", json={"lr": [0.05], "reason": "<b>spike</b>"})
    response = client.get(f"/runs/{run_id}")
    page = parse(response)
    assert "<b>spike</b>" not in response.text
    assert "&lt;b&gt;spike&lt;/b&gt;" in response.text or "\\u003cb\\u003e" in response.text
    csv_link = next(link for link in page.links if "format=csv" in link)
    csv = client.get(csv_link.replace("&amp;", "&"))
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.splitlines()) == 7  # header + steps 0..5
    assert f"/v1/runs/{run_id}/chart.svg" in page.links
    assert f"/v1/runs/{run_id}/chart.png" in page.links
    assert re.search(r"data-runs='\[&#34;|data-runs='\[\"", response.text)


def test_pages_of_unknown_runs_are_html_404s(client: httpx.Client) -> None:
    response = client.get("/runs/no-such-page-run")
    parse(response, status=404)
    assert "There is no run &#39;no-such-page-run&#39;" in response.text
    parse(client.get("/compare", params={"run": "no-such-page-run"}), status=404)


def test_the_compare_page_draws_the_runs_picked(client: httpx.Client) -> None:
    first, second = create_run(client, 3), create_run(client, 4)
    response = client.get("/compare", params={"run": [first, second]})
    page = parse(response)
    assert f"/runs/{first}" in page.links and f"/runs/{second}" in page.links
    assert "charts.js" in " ".join(page.scripts)


def test_the_preview_page_draws_what_the_api_previews(client: httpx.Client) -> None:
    scheduler = {"type": "StepLR", "params": {"step_size": 3, "gamma": 0.5}}
    query = {"scheduler": json.dumps(scheduler), "param_groups": '[{"lr": 0.2}]', "steps": 9}
    response = client.get("/preview", params=query)
    assert response.status_code == 200
    embedded = re.search(r'id="preview-data">(.*?)</script>', response.text, re.S)
    assert embedded is not None
    api = client.post(
        "/v1/preview", json={"scheduler": scheduler, "param_groups": [{"lr": 0.2}], "steps": 9}
    )
    assert json.loads(embedded.group(1)) == api.json()


@pytest.mark.parametrize(
    ("scheduler", "field"),
    [
        ("{not json", "scheduler"),
        ('{"type": "StepLR", "params": {}}', "scheduler.params.step_size"),
    ],
)
def test_the_preview_page_names_the_field_it_cannot_use(
    client: httpx.Client, scheduler: str, field: str
) -> None:
    response = client.get("/preview", params={"scheduler": scheduler, "steps": 5})
    parse(response, status=422)
    assert f"<code>{field}</code>" in response.text
    assert 'id="preview-data"' not in response.text


def test_the_api_docs_load_every_script_from_the_service(client: httpx.Client) -> None:
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        page = parse(response)
        assets = page.scripts + page.stylesheets
        text = response.text
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", text)
        assert urls, path
        assert not [url for url in urls if url.startswith(("http:", "https:", "//"))], urls
        for url in [*assets, *urls]:
            if url.startswith("/static/"):
                assert client.get(url).status_code == 200, url


def test_assets_are_gzipped_when_asked_and_unknown_ones_are_404(client: httpx.Client) -> None:
    plotly = client.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert plotly.status_code == 200
    assert plotly.headers["content-encoding"] == "gzip"
    assert "max-age" in plotly.headers["cache-control"]
    assert b"plotly" in plotly.content[:2000]  # httpx decoded it
    raw = client.get("/static/charts.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert gzip.compress(raw.content)  # plain bytes
    assert client.get("/static/nothing.js").status_code == 404


def test_assets_and_docs_need_no_token_but_pages_do(server_factory: ServerFactory) -> None:
    server: LiveServer = server_factory(
        "sqlite", environment={"LRKEEPER_TOKENS": ACCESS_TOKENS.setting}
    )
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        assert http.get("/static/charts.js").status_code == 200
        assert http.get("/docs").status_code == 200
        assert http.get("/redoc").status_code == 200
        assert http.get("/").status_code == 303  # to the login form
        assert http.get("/preview").status_code == 303


def test_only_a_range_test_run_page_has_the_loss_vs_lr_chart_and_its_links(
    client: httpx.Client,
) -> None:
    range_test = {
        "type": "LRRangeTest",
        "params": {"start_lr": 1e-4, "end_lr": 1.0, "num_steps": 20},
    }
    run_id = create_run(client, 0, scheduler=range_test)
    response = client.get(f"/runs/{run_id}")
    page = parse(response)
    assert 'id="suggestion-chart"' in response.text
    assert "loss vs lr" in response.text
    for link in ("lr-suggestion", "lr-suggestion/chart.svg", "lr-suggestion/chart.png"):
        assert f"/v1/runs/{run_id}/{link}" in page.links
    other = client.get(f"/runs/{create_run(client, 3)}").text
    assert "suggestion-chart" not in other
