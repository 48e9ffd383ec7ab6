"""The playground against what a server may say (outside review): a long model path at a phone's
width, and text from the server that looks like HTML, which the page must show as text.

One server whose model cannot load (no model to import, so it costs little): its `/health`
shows the model's path and the failure, with no key set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Route, expect

from tests.browser.conftest import Tab
from tests.support.server import ServerProcess

READY_TIMEOUT_MS = 120_000
# A Hugging Face cache snapshot, as THAW_MODEL often names one: long, with no space to wrap at.
SNAPSHOT = (
    "hub/models--stabilityai--stable-diffusion-xl-base-1.0/snapshots/"
    "462165984030d82259a11f4367a4eed129e94a7b"
)
HTML = '<img src=x onerror="window.__xss=(window.__xss||0)+1"><b id=pwn>bold</b>'


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    where = tmp_path_factory.mktemp("edges")
    proc = ServerProcess(
        {
            "THAW_MODEL": str(where / SNAPSHOT),
            "THAW_LOAD_ATTEMPTS": "1",
            "THAW_LOAD_COOLDOWN_S": "600",
            "THAW_CACHE_DIR": str(where / "cache"),
            "THAW_JOBS_DIR": str(where / "jobs"),
        }
    ).start()
    try:
        proc.wait_live()
        yield proc
    finally:
        proc.stop()


def sideways(tab: Tab) -> dict[str, int]:
    widths: dict[str, int] = tab.page.evaluate(
        "({page: document.documentElement.scrollWidth, view: window.innerWidth})"
    )
    return widths


def test_a_long_model_path_does_not_scroll_sideways_at_phone_width(
    failed: ServerProcess, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(failed.url, width=375, height=812)
    page = tab.page
    page.goto(failed.url + "/")
    expect(page.locator("#state")).to_have_attribute(
        "data-state", "failed", timeout=READY_TIMEOUT_MS
    )
    expect(page.locator("#model-detail")).to_contain_text(SNAPSHOT)
    reason = page.locator("#model-reason")
    expect(reason).to_contain_text(SNAPSHOT)
    widths = sideways(tab)
    assert widths["page"] <= widths["view"] == 375, widths
    # The failure and when the next load comes read as two sentences.
    assert ". A new load starts in about" in reason.inner_text()
    tab.check_clean()


def test_server_text_is_shown_as_text_never_as_html(
    failed: ServerProcess, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(failed.url, width=375, height=812)
    page = tab.page
    health = {
        "status": "failed",
        "model": HTML,
        "device": HTML,
        "dtype": HTML,
        "last_error": HTML,
        "retry_in_s": 30,
        "load_attempts": 2,
        "phases": [{"name": HTML, "start_s": 0, "seconds": 1.0, "state": "failed"}],
        "load_started_s": 0,
        "uptime_s": 5,
        "inflight": 0,
        "queued": 0,
        "served": 0,
        "cold_start": {"ready_after_s": None},
    }
    answers = iter(
        [
            # A 422 whose message and field name carry markup (thaw echoes an unknown field's
            # name), one placed beside the prompt and one that names no field of the form.
            (
                422,
                {
                    "error": {
                        "code": "invalid_request",
                        "message": HTML,
                        "retry_after": None,
                        "details": [
                            {"field": "prompt", "message": HTML},
                            {"field": HTML, "message": HTML},
                        ],
                    }
                },
                {},
            ),
            (
                503,
                {"error": {"code": HTML, "message": HTML, "retry_after": 2}},
                {"Retry-After": "2"},
            ),
        ]
    )

    def fake_health(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(health))

    def fake_job(route: Route) -> None:
        status, body, headers = next(answers)
        route.fulfill(
            status=status, content_type="application/json", body=json.dumps(body), headers=headers
        )

    page.route(f"{failed.url}/health", fake_health)
    page.route(f"{failed.url}/jobs", fake_job)
    page.goto(failed.url + "/")
    expect(page.locator("#state")).to_have_attribute(
        "data-state", "failed", timeout=READY_TIMEOUT_MS
    )
    expect(page.locator("#model-reason")).to_contain_text(HTML)
    expect(page.locator(".phase-name").first).to_have_text(HTML)
    expect(page.locator("#field-prompt")).to_be_visible()
    page.fill("#field-prompt", "a prompt")
    page.click("#submit")
    expect(page.locator("#field-prompt-error")).to_have_text(HTML)
    expect(page.locator("#problem-text")).to_contain_text(f"{HTML}: {HTML}")
    page.click("#submit")
    expect(page.locator("#problem-text")).to_contain_text(HTML)
    expect(page.locator("#problem-retry")).to_contain_text("Retry-After")
    assert page.locator("#pwn").count() == 0
    assert page.evaluate("window.__xss === undefined")
    assert page.locator("main img").count() == 1  # the result's own, empty <img id=image>
    assert sideways(tab)["page"] <= 375
    tab.check_clean()
