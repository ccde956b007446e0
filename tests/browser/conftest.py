"""A real browser for the pages: Debian's chromium driven by Playwright for Python.

``playwright install`` is never run (it downloads a browser); the tests launch the
chromium that .ci/run installs from Debian's packages. Every request the page
makes to anywhere but the service under test is refused and recorded, so a page
that needs the internet (a CDN script) fails instead of quietly working online.
Screenshots go to tests/browser/screenshots/ (README: "Browser tests"), which CI
keeps as artifacts.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, sync_playwright

from tests.conftest import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).with_name("screenshots")

pytestmark = pytest.mark.browser


# Module scope, not session: Playwright's sync API runs an asyncio loop in the main
# thread while it is open, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
    yield launched
    launched.close()


class OfflinePage:
    """A page whose requests may only reach ``base_url``; the others are refused and kept."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.refused: list[str] = []
        page.route("**/*", self._route)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.base_url) or url.startswith("data:"):
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@pytest.fixture
def offline_page(browser: Browser, sqlite_server: LiveServer) -> Iterator[OfflinePage]:
    context = browser.new_context(
        base_url=sqlite_server.base_url,
        viewport={"width": 1280, "height": 900},
        accept_downloads=True,
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    offline = OfflinePage(page, sqlite_server.base_url)
    try:
        yield offline
    finally:
        context.close()
    assert offline.refused == [], "the page asked for something beyond the service"
