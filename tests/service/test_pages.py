"""The HTML pages and the SVG chart: real HTML, the run's data in it, no JavaScript."""

import uuid
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser

import httpx

SVG_NAMESPACE = "{http://www.w3.org/2000/svg}"
COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 10}}


class LinkAndScriptParser(HTMLParser):
    """Collects the links of a page and whether it holds any script."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.extend(value for name, value in attrs if name == "href" and value)
        if tag == "script":
            self.scripts += 1


def parse(response: httpx.Response) -> LinkAndScriptParser:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    parser = LinkAndScriptParser()
    parser.feed(response.text)
    assert parser.scripts == 0
    return parser


def create_run(client: httpx.Client, steps: int, groups: int = 1) -> str:
    run_id = f"page-{uuid.uuid4().hex[:12]}"
    param_groups = [{"lr": 0.1 / (index + 1)} for index in range(groups)]
    response = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": COSINE, "param_groups": param_groups}
    )
    assert response.status_code == 201
    if steps:
        assert client.post(f"/v1/runs/{run_id}/steps", json={"step": steps}).status_code == 200
    return run_id


def test_the_front_page_lists_runs_with_links_to_them(client: httpx.Client) -> None:
    run_id = create_run(client, steps=3)
    page = parse(client.get("/", params={"prefix": run_id}))
    assert f"/runs/{run_id}" in page.links
    assert "CosineAnnealingLR" in client.get("/", params={"prefix": run_id}).text


def test_a_run_page_shows_the_run_a_chart_and_links_to_its_data(client: httpx.Client) -> None:
    run_id = create_run(client, steps=5)
    client.post(f"/v1/runs/{run_id}/lr", json={"lr": [0.05], "reason": "<b>spike</b>"})
    response = client.get(f"/runs/{run_id}")
    page = parse(response)
    assert f"/v1/runs/{run_id}" in page.links
    assert any(link.startswith(f"/v1/runs/{run_id}/history?format=csv") for link in page.links)
    assert f"/v1/runs/{run_id}/chart.svg" in page.links
    assert "<svg" in response.text
    assert "lr_set" in response.text
    assert "<b>spike</b>" not in response.text  # user text is escaped
    csv_link = next(link for link in page.links if "format=csv" in link)
    csv = client.get(csv_link.replace("&amp;", "&"))
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.splitlines()) == 7  # header + steps 0..5


def test_the_chart_draws_one_line_per_group_through_every_step(client: httpx.Client) -> None:
    # The chart is service.routes.charts' (matplotlib, tests/service/test_charts.py); a page
    # links to it, so its basic promise is kept here too.
    run_id = create_run(client, steps=10, groups=2)
    response = client.get(f"/v1/runs/{run_id}/chart.svg")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    svg = ElementTree.fromstring(response.text)
    for group in (0, 1):
        (line,) = svg.iterfind(f".//{SVG_NAMESPACE}g[@id='lr-group-{group}']/{SVG_NAMESPACE}path")
        vertices = [float(x) for x in line.attrib["d"].split()[1::3]]
        assert len(vertices) == 2 * 11 - 1  # steps-post: 11 steps, a corner between each two
        assert vertices == sorted(vertices)


def test_pages_of_an_unknown_run_are_404s(client: httpx.Client) -> None:
    assert client.get("/runs/no-such-page-run").status_code == 404
    assert client.get("/v1/runs/no-such-page-run/chart.svg").status_code == 404
