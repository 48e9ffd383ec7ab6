"""THAW_MAX_PIXELS holds when a request gives one side only: the other is the model's default.

The tiny model's default size is 64x64. The server loads lazily, so the first request arrives
before the model's default size is known.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

BUDGET = 256 * 256
QUICK = {"prompt": "a wide strip", "num_inference_steps": 1}


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_MAX_PIXELS": str(BUDGET),
            "THAW_PRELOAD": "lazy",
            "THAW_WARM_WAIT_S": "120",
        }
    ).start()
    proc.wait_live()
    yield proc
    assert proc.stop() == 0


def assert_over_budget(answer_json: dict[str, object], side: str) -> None:
    error = answer_json["error"]
    assert isinstance(error, dict)
    assert error["code"] == "invalid_request"
    assert f"exceeds the limit of {BUDGET} pixels" in error["message"]
    assert side in error["message"]


def test_one_side_over_the_budget_with_the_models_default_is_a_422(
    server: ServerProcess,
) -> None:
    # First request: the model is not loaded yet; it loads, and the budget still holds.
    assert server.get("/health").json()["status"] == "cold"
    first = server.post("/generate", json={**QUICK, "width": 2048})
    assert first.status_code == 422, first.headers
    assert_over_budget(first.json(), "width")
    assert server.get("/health").json()["status"] == "ready"
    # Now loaded: refused before it queues, for either side and from a GET too.
    tall = server.post("/generate", json={**QUICK, "height": 2048})
    assert tall.status_code == 422
    assert_over_budget(tall.json(), "height")
    by_get = server.get("/generate", params={**QUICK, "width": 2048})
    assert by_get.status_code == 422
    assert_over_budget(by_get.json(), "width")


def test_one_side_within_the_budget_is_served(server: ServerProcess) -> None:
    answer = server.post("/generate", json={**QUICK, "width": 1024})  # 1024 x 64 = the budget
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
