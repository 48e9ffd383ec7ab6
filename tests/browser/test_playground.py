"""The playground at `/`, end to end: a real thaw server on loopback with the tiny model, and a
real headless Chromium.

One server serves most tests; its load is slowed by the test loader, so the first test sees the
page while the model warms up. A second server, with a model that cannot load and an API key,
shows a failure, the key field and a drain.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import ARTIFACTS, Tab
from tests.support.server import ServerProcess

LOAD_DELAY_S = 6  # the slowed load: long enough to see on a busy machine, short enough to wait
READY_TIMEOUT_MS = 120_000  # the tiny model's load on a busy 2-core machine, with margin
IMAGE_TIMEOUT_MS = 60_000
KEY = "playground-key-0123456789"


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cache = tmp_path_factory.mktemp("cache")
    proc = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": "tests.support.slow_loader:load",
            "THAW_TEST_LOAD_DELAY_S": str(LOAD_DELAY_S),
            "THAW_CACHE_DIR": str(cache),
            "THAW_JOBS_DIR": str(cache / "jobs"),
        }
    ).start()
    try:
        proc.wait_live()
        yield proc
    finally:
        assert proc.stop() == 0, proc.log[-3000:]


@pytest.fixture
def ready(server: ServerProcess) -> ServerProcess:
    server.wait_ready(timeout=READY_TIMEOUT_MS / 1000)
    return server


def field(name: str) -> str:
    return f"#field-{name}"


def request_fields(server: ServerProcess) -> dict[str, Any]:
    """The request schema's properties, as /openapi.json shows them now."""
    spec = server.get("/openapi.json").json()
    properties: dict[str, Any] = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    return properties


def fill_request(page: Page, prompt: str, **values: object) -> None:
    expect(page.locator(field("prompt"))).to_be_visible()
    page.fill(field("prompt"), prompt)
    for name, value in values.items():
        page.fill(field(name), str(value))


def png_facts(page: Page) -> dict[str, object]:
    """What the page shows: the image's decoded size, and the bytes behind it (through the
    page's own download link: the page's CSP lets no script fetch its blob: URL)."""
    facts: dict[str, object] = page.evaluate(
        """() => {
            const img = document.getElementById("image");
            return {width: img.naturalWidth, height: img.naturalHeight, src: img.src};
        }"""
    )
    with page.expect_download() as download:
        page.click("#download")
    path = download.value.path()
    facts["head"] = list(path.read_bytes()[:8])
    facts["filename"] = download.value.suggested_filename
    return facts


PNG_SIGNATURE = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]


def wait_for_image(page: Page) -> None:
    expect(page.locator("#figure")).to_be_visible(timeout=IMAGE_TIMEOUT_MS)
    page.wait_for_function(
        "() => document.getElementById('image').complete && "
        "document.getElementById('image').naturalWidth > 0",
        timeout=IMAGE_TIMEOUT_MS,
    )


def record_texts(page: Page, element_id: str) -> None:
    """Keep every text the element shows in `window.seen[element_id]`, however briefly."""
    page.evaluate(
        """(id) => {
            window.seen = window.seen || {};
            const node = document.getElementById(id);
            const seen = (window.seen[id] = [node.textContent]);
            new MutationObserver(() => seen.push(node.textContent)).observe(
                node, {childList: true, characterData: true, subtree: true});
        }""",
        element_id,
    )


def answer_501(route: Route) -> None:
    """POST /jobs as a deployment without jobs answers it (Lambda, today)."""
    body = {"error": {"code": "not_implemented", "message": "no jobs here", "retry_after": None}}
    route.fulfill(status=501, content_type="application/json", body=json.dumps(body))


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


# -- the state -------------------------------------------------------------------------------


def test_the_page_shows_the_load_phase_by_phase_then_ready(
    server: ServerProcess, open_tab: Callable[..., Tab]
) -> None:
    """First in the module: the server was just started, its model is still loading."""
    tab = open_tab(server.url)
    page = tab.page
    page.goto(server.url + "/")
    state = page.locator("#state")
    expect(state).to_have_attribute("data-state", "warming_up")
    expect(state).to_have_text("Warming up")
    # Before the load, the form is the edge's: no model's defaults yet.
    width = page.locator(field("width"))
    expect(width).to_have_attribute("placeholder", "default")
    edge_max = width.get_attribute("max")
    page.fill(field("prompt"), "typed while it warmed up")
    page.focus(field("prompt"))
    # The test loader's delay is a phase of its own: its bar grows while it runs.
    delay = page.locator(".phase", has=page.locator(".phase-name", has_text="test_delay"))
    expect(delay).to_have_attribute("data-state", "running")
    # Its length in seconds: the bar's share of the axis (which steps up as time passes).
    spans = []
    for _ in range(2):
        spans.append(
            page.evaluate(
                """() => {
                    const row = [...document.querySelectorAll(".phase")].find(
                        (node) => node.querySelector(".phase-name").textContent === "test_delay");
                    const end = parseFloat(document.getElementById("axis-end").textContent);
                    return parseFloat(row.querySelector(".bar").style.width) * end / 100;
                }"""
            )
        )
        page.wait_for_timeout(700)
    assert spans[1] > spans[0] > 0, spans
    screenshot(page, "playground-warming.png")

    expect(state).to_have_attribute("data-state", "ready", timeout=READY_TIMEOUT_MS)
    expect(state).to_have_text("Ready")
    names = page.locator(".phase-name").all_inner_texts()
    assert {"test_delay", "import"} <= set(names), names
    expect(page.locator('.phase[data-state="running"]')).to_have_count(0)
    # Each phase says where it lies on the timeline from spawn, in words too.
    label = delay.get_attribute("aria-label") or ""
    assert re.fullmatch(r"test_delay: \d\.\d\d s, from \d\.\d\d s to \d\.\d\d s after spawn", label)
    took = float(label.split(": ")[1].split(" s")[0])
    assert LOAD_DELAY_S <= took < LOAD_DELAY_S + 2, label
    expect(page.locator("#model-detail")).to_contain_text("after spawn")
    expect(page.locator(".ready-mark")).to_have_count(len(names))  # a line down the timeline
    # Loaded, the model's own schema: the form is rebuilt with its defaults and bounds, and
    # keeps what was typed, and where.
    model_width = request_fields(server)["width"]
    expect(width).to_have_attribute("placeholder", str(model_width["default"]))
    expect(width).to_have_attribute("max", str(model_width["anyOf"][0]["maximum"]))
    assert edge_max != width.get_attribute("max"), edge_max
    expect(page.locator("#field-width-hint")).to_contain_text(f"empty: {model_width['default']}")
    expect(page.locator(field("prompt"))).to_have_value("typed while it warmed up")
    expect(page.locator(field("prompt"))).to_be_focused()
    tab.check_clean()


# -- generating ------------------------------------------------------------------------------


def test_a_prompt_comes_back_as_a_png_with_its_seed_and_per_step_progress(
    ready: ServerProcess, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(ready.url)
    page = tab.page
    page.goto(ready.url + "/")
    expect(page.locator("#state")).to_have_attribute("data-state", "ready")
    # The bounds come from /openapi.json.
    steps = page.locator(field("num_inference_steps"))
    expect(steps).to_have_attribute("min", "1")
    expect(steps).to_have_attribute("max", "100")
    expect(page.locator(field("width"))).to_have_attribute("step", "8")
    default_steps = request_fields(ready)["num_inference_steps"]["default"]
    expect(page.locator("#field-num_inference_steps-hint")).to_have_text(
        f"1 to 100, empty: {default_steps}."
    )
    expect(steps).to_have_attribute("placeholder", str(default_steps))
    fill_request(
        page, "a lighthouse at dawn", num_inference_steps=12, width=128, height=96, seed=1234
    )
    record_texts(page, "progress-label")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))
    page.click("#submit")
    wait_for_image(page)

    facts = png_facts(page)
    assert (facts["width"], facts["height"]) == (128, 96), facts
    assert facts["head"] == PNG_SIGNATURE, facts
    assert facts["filename"] == "thaw-1234.png", facts
    assert str(facts["src"]).startswith("blob:"), facts
    expect(page.locator("#seed")).to_have_text("1234")
    expect(page.locator("#facts")).to_contain_text("128 × 96")
    expect(page.locator("#facts")).to_contain_text("Generation")
    expect(page.locator("#image")).to_have_attribute("alt", re.compile("lighthouse.*seed 1234"))
    # It went through the jobs API and showed the steps as they came.
    assert f"POST {ready.url}/jobs" in requests, requests
    job_events = [r for r in requests if re.search(r"/jobs/\w+/events$", r)]
    assert job_events, requests
    seen = page.evaluate("window.seen['progress-label']")
    # (A scheduler may run a step more than asked: PNDM, the tiny model's, runs 13 for 12.)
    steps_seen = [text for text in seen if re.fullmatch(r"Step \d+ of 1[23].*", text)]
    assert steps_seen, seen
    expect(page.locator("#progress-box")).to_be_hidden()
    screenshot(page, "playground.png")
    tab.check_clean()


def test_where_jobs_answer_501_the_page_generates_synchronously(
    ready: ServerProcess, open_tab: Callable[..., Tab]
) -> None:
    """As on Lambda: POST /jobs is 501 there, so the page falls back to POST /generate and shows
    its Server-Timing figures."""
    tab = open_tab(ready.url)
    page = tab.page

    page.route(f"{ready.url}/jobs", answer_501)
    page.goto(ready.url + "/")
    fill_request(page, "fallback", num_inference_steps=2, width=64, height=64)
    with page.expect_response(f"{ready.url}/generate") as answer:
        page.click("#submit")
    wait_for_image(page)
    seed = answer.value.headers["x-seed"]
    expect(page.locator("#seed")).to_have_text(seed)
    facts = page.locator("#facts")
    for name in ("Queue", "Inference", "Encode"):
        expect(facts).to_contain_text(name)
    expect(facts).to_contain_text(re.compile(r"Inference\s*[\d,.]+ ms"))
    assert png_facts(page)["width"] == 64
    tab.check_clean()


# -- errors ----------------------------------------------------------------------------------


def test_a_value_out_of_bounds_gets_the_servers_message_beside_its_field(
    ready: ServerProcess, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(ready.url)
    page = tab.page
    page.goto(ready.url + "/")
    # The form does no checking of its own (novalidate): the server's 422 is what shows.
    fill_request(page, "too many steps", num_inference_steps=1000)
    with page.expect_response(f"{ready.url}/jobs") as answer:
        page.click("#submit")
    assert answer.value.status == 422
    steps = page.locator(field("num_inference_steps"))
    message = page.locator("#field-num_inference_steps-error")
    expect(message).to_have_text("Input should be less than or equal to 100")
    expect(steps).to_have_attribute("aria-invalid", "true")
    expect(steps).to_be_focused()
    expect(page.locator("#problem-text")).to_contain_text("Check the form.")
    # The field's message is part of its description, for screen readers.
    assert "field-num_inference_steps-error" in (steps.get_attribute("aria-describedby") or "")
    # Fixed, the error goes.
    page.fill(field("num_inference_steps"), "2")
    page.fill(field("width"), "64")
    page.fill(field("height"), "64")
    page.click("#submit")
    wait_for_image(page)
    expect(message).to_be_empty()
    expect(steps).not_to_have_attribute("aria-invalid", "true")
    tab.check_clean()


def test_a_429_counts_down_from_retry_after(
    ready: ServerProcess, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(ready.url)
    page = tab.page

    def busy(route: Route) -> None:
        body = {"error": {"code": "overloaded", "message": "queue full", "retry_after": 3}}
        route.fulfill(
            status=429,
            content_type="application/json",
            headers={"Retry-After": "3"},
            body=json.dumps(body),
        )

    page.route(f"{ready.url}/jobs", busy)
    page.goto(ready.url + "/")
    fill_request(page, "busy")
    record_texts(page, "problem-retry")
    page.click("#submit")
    expect(page.locator("#problem-text")).to_have_text("Busy. queue full")
    expect(page.locator("#submit")).to_have_attribute("aria-disabled", "true")
    expect(page.locator("#problem-retry")).to_have_text("You can try again now.", timeout=6_000)
    expect(page.locator("#submit")).to_have_attribute("aria-disabled", "false")
    seen = page.evaluate("window.seen['problem-retry']")
    counted = [
        int(text.split()[3]) for text in dict.fromkeys(seen) if text.startswith("Try again in")
    ]
    # Down from 3, a second at a time (a busy machine's late timer may skip one).
    assert counted[0] == 3, seen
    assert counted == sorted(set(counted), reverse=True), seen
    tab.check_clean()


# -- keyboard and phone ------------------------------------------------------------------------


def test_keyboard_only(ready: ServerProcess, open_tab: Callable[..., Tab]) -> None:
    tab = open_tab(ready.url)
    page = tab.page
    page.goto(ready.url + "/")
    expect(page.locator(field("prompt"))).to_be_visible()
    # Every control has a name a screen reader can say: a label, or its own text.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea, button, a[href]")]
            .filter((node) => !(node.labels && node.labels.length) && !node.textContent.trim()
                && !node.getAttribute("aria-label") && !node.getAttribute("aria-labelledby"))
            .map((node) => node.outerHTML)"""
    )
    assert unnamed == []
    keyboard = page.keyboard
    for _ in range(12):  # the skip link, then the prompt after a few stops at most
        keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "field-prompt":
            break
    else:
        pytest.fail("Tab never reached the prompt")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused field shows no focus ring"
    keyboard.press("Control+A")
    keyboard.type("typed, not clicked")
    keyboard.press("Tab")  # the negative prompt
    keyboard.press("Tab")  # steps
    assert page.evaluate("document.activeElement.id") == "field-num_inference_steps"
    keyboard.type("2")
    for name in ("guidance_scale", "width", "height"):
        keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == f"field-{name}"
        if name != "guidance_scale":
            keyboard.type("64")
    keyboard.press("Enter")  # a form's implicit submission
    wait_for_image(page)
    first = page.locator("#seed").inner_text()
    # Ctrl+Enter from the prompt's text box submits too.
    page.focus(field("prompt"))
    keyboard.press("Control+Enter")
    expect(page.locator("#seed")).not_to_have_text(first, timeout=IMAGE_TIMEOUT_MS)
    tab.check_clean()


def test_at_phone_width_nothing_scrolls_sideways(
    ready: ServerProcess, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(ready.url, width=375, height=812)
    page = tab.page
    page.goto(ready.url + "/")
    fill_request(page, "small screen", num_inference_steps=2, width=256, height=256)
    page.click("#submit")
    wait_for_image(page)
    # A field error too, the longest text the form shows.
    page.fill(field("seed"), "99999999999")
    page.click("#submit")
    expect(page.locator("#field-seed-error")).not_to_be_empty()
    widths = page.evaluate(
        "({page: document.documentElement.scrollWidth, view: window.innerWidth,"
        " image: document.getElementById('image').getBoundingClientRect().right})"
    )
    assert widths["page"] <= widths["view"] == 375, widths
    assert widths["image"] <= 375, widths
    screenshot(page, "playground-phone.png")
    tab.check_clean()


# -- a failed model, the key, a drain ----------------------------------------------------------


def test_a_failed_load_a_key_and_a_drain(tmp_path: Path, open_tab: Callable[..., Tab]) -> None:
    missing = tmp_path / "no-such-model"
    proc = ServerProcess(
        {
            "THAW_MODEL": str(missing),
            "THAW_API_KEY": KEY,
            "THAW_LOAD_ATTEMPTS": "1",
            "THAW_LOAD_COOLDOWN_S": "600",
            "THAW_DRAIN_DELAY_S": "4",
            "THAW_CACHE_DIR": str(tmp_path / "cache"),
            "THAW_JOBS_DIR": str(tmp_path / "jobs"),
        }
    ).start()
    try:
        proc.wait_live()
        tab = open_tab(proc.url)
        page = tab.page
        page.goto(proc.url + "/")
        state = page.locator("#state")
        expect(state).to_have_attribute("data-state", "failed", timeout=READY_TIMEOUT_MS)
        reason = page.locator("#model-reason")
        # Without the key, /health keeps the reason to itself, and the page says so.
        expect(reason).to_contain_text("The reason is shown with the API key.")

        fill_request(page, "no key yet")
        page.click("#submit")
        key = page.locator("#api-key")
        expect(key).to_be_focused()
        expect(page.locator("#api-key-error")).to_have_text("This server needs an API key.")
        page.keyboard.type(KEY)
        assert page.evaluate("sessionStorage.getItem('thaw.apiKey')") == KEY

        # With the key: the reason; a job is accepted and fails with it.
        expect(reason).to_contain_text(str(missing))
        with page.expect_response(f"{proc.url}/jobs") as answer:
            page.click("#submit")
        assert answer.value.status == 202
        expect(page.locator("#problem-text")).to_contain_text(
            re.compile(r"^Failed\. model failed to load: .*\(load_failed\)$")
        )
        # Where jobs are not offered (Lambda), the same request is a 503 at once, and its
        # Retry-After counts down.
        page.route(f"{proc.url}/jobs", answer_501)
        with page.expect_response(f"{proc.url}/generate") as answer:
            page.click("#submit")
        assert answer.value.status == 503
        retry_after = int(answer.value.headers["retry-after"])
        expect(page.locator("#problem-text")).to_contain_text("model failed to load")
        expect(page.locator("#problem-retry")).to_have_text(
            re.compile(rf"Try again in ({retry_after}|{retry_after - 1}) s \(Retry-After\)\.")
        )
        time.sleep(0.2)
        page.reload()  # the key stays for the tab's life
        expect(key).to_have_value(KEY)

        # SIGTERM: the process drains for THAW_DRAIN_DELAY_S, and the page shows it.
        proc.signal(signal.SIGTERM)
        expect(state).to_have_attribute("data-state", "draining", timeout=10_000)
        expect(state).to_have_text(re.compile("^Draining"))
        assert proc.wait_exit(timeout=60) == 0
        expect(state).to_have_attribute("data-state", "unreachable", timeout=10_000)
        screenshot(page, "playground-failed.png")
        tab.check_clean()
    finally:
        proc.stop()
