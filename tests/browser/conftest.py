"""Browser tests: a real headless Chromium (Debian's `chromium`) driven by Playwright.

Marked `browser` and left out of the default run (`make test`); `make test-browser` runs them.
Playwright never downloads a browser here: it drives the system's Chromium by its path
(`THAW_CHROMIUM`, default /usr/bin/chromium).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    sync_playwright,
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "artifacts"
CHROMIUM = Path(os.environ.get("THAW_CHROMIUM", "/usr/bin/chromium"))
# Every wait in a page is bounded; the model's load has its own, longer bound in the tests.
ACTION_TIMEOUT_MS = 20_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian), or set "
            "THAW_CHROMIUM to a Chromium binary"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            # --no-sandbox: CI and these machines run as root, where Chromium's sandbox refuses
            # to start. The page is our own, served from loopback.
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            timeout=60_000,
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    """One page in its own context, with what went wrong in it recorded."""

    page: Page
    context: BrowserContext
    origin: str
    offsite: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check_clean(self) -> None:
        """No request left the server's origin; no script error, no CSP refusal."""
        assert self.offsite == [], f"requests outside {self.origin}: {self.offsite}"
        assert self.errors == [], f"errors in the page: {self.errors}"


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """`open_tab(origin, width=, height=)`: a fresh context whose requests may go only to the
    server under test (anything else is aborted and recorded)."""
    contexts: list[BrowserContext] = []

    def open_(origin: str, *, width: int = 1280, height: int = 900) -> Tab:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        page = context.new_page()
        tab = Tab(page, context, origin)

        def guard(route: Route) -> None:
            url = route.request.url
            if url == origin or url.startswith(f"{origin}/"):
                route.continue_()
            else:
                tab.offsite.append(url)
                route.abort()

        def on_console(message: ConsoleMessage) -> None:
            # A 4xx or 5xx that the page asked for is logged by Chromium as an error too; those
            # are the tests' own doing. Anything else (a CSP refusal, a script error) is not.
            if message.type == "error" and "Failed to load resource" not in message.text:
                tab.errors.append(message.text)

        context.route("**/*", guard)
        page.on("console", on_console)
        page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))
        return tab

    yield open_
    for context in contexts:
        context.close()
