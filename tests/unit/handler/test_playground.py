"""handler.routes.playground: the page and its files, served as committed, under a CSP that
allows nothing but this origin (the browser tests in tests/browser drive the page itself)."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from handler.routes import playground


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(playground.router)
    return TestClient(app)


def test_the_page_is_served_under_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    again = client.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304


def test_every_file_the_page_loads_is_served_and_nothing_unused(client: TestClient) -> None:
    html = client.get("/").text
    wanted = set(re.findall(r'(?:src|href)="/playground/([^"]+)"', html))
    scripts = [name for name in wanted if name.endswith(".js")]
    while scripts:  # the ES modules' own imports, relative to /playground/
        script = client.get(f"/playground/{scripts.pop()}").text
        for name in re.findall(r'from "\./([^"]+)"', script):
            if name not in wanted:
                wanted.add(name)
                scripts.append(name)
    assert wanted == set(playground.assets())
    for name in wanted:
        answer = client.get(f"/playground/{name}")
        assert answer.status_code == 200, name
        suffix = name[name.rindex(".") :]
        assert answer.headers["content-type"] == playground.MEDIA_TYPES[suffix]


@pytest.mark.parametrize("name", ["playground.html", "..%2Fapp.py", "nope.js", "__init__.py"])
def test_nothing_else_is(client: TestClient, name: str) -> None:
    answer = client.get(f"/playground/{name}")
    assert answer.status_code == 404


def test_the_page_needs_no_inline_code_and_no_other_host() -> None:
    """What the CSP would refuse (inline scripts, styles and handlers), and any other host
    (a CDN), is absent from the files themselves."""
    html = (playground.STATIC / playground.PAGE).read_text(encoding="utf-8")
    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", html) == []
    assert re.findall(r"\s(?:style|on[a-z]+)=", html) == []
    assert "<style" not in html
    for name in [playground.PAGE, *playground.assets()]:
        text = (playground.STATIC / name).read_text(encoding="utf-8")
        hosts = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text))
        assert hosts <= {"http://www.w3.org"}, name  # the SVG namespace, never fetched
