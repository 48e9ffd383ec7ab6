"""Outside review of issue 19 (pipeline families), on real servers (unit side:
tests/unit/handler/test_families_review.py).

- SD3 with THAW_DEFAULT_WIDTH past its position-embedding cap (the tiny SD3 takes at most 512
  px a side): the server was ready and refused every request that omitted the width with a 422
  blaming the client's `width`. Now the load fails naming the setting (/readyz 503, /health's
  `last_error`, a 503 load_failed for requests).
- Flux through the OpenAI route: a negative prompt needs `true_cfg_scale` > 1, which the route
  refused as an extra field, so no negative prompt could ever be used there. Now it takes it
  (and `max_sequence_length`), and gives the image `/generate` gives for the same values.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from tests.support.families import built
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def flux() -> Iterator[ServerProcess]:
    server = ServerProcess({"THAW_MODEL": str(built("flux"))})
    try:
        server.start()
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_a_default_width_past_sd3_s_cap_fails_the_load_naming_the_setting() -> None:
    server = ServerProcess(
        {
            "THAW_MODEL": str(built("sd3")),
            "THAW_DEFAULT_WIDTH": "1024",
            "THAW_LOAD_ATTEMPTS": "1",
            "THAW_LOAD_COOLDOWN_S": "600",
        }
    )
    try:
        server.start()
        server.wait_live()
        deadline = time.monotonic() + 120
        health = server.get("/health").json()
        while health["status"] != "failed" and time.monotonic() < deadline:
            assert health["status"] != "ready", "a default the model refuses must not load"
            time.sleep(0.2)
            health = server.get("/health").json()
        assert health["status"] == "failed"
        assert "THAW_DEFAULT_WIDTH=1024" in health["last_error"]
        assert server.get("/readyz").status_code == 503
        response = server.post("/generate", json={"prompt": "a fox", "num_inference_steps": 1})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "load_failed"
        assert "THAW_DEFAULT_WIDTH=1024" in response.json()["error"]["message"]
    finally:
        server.stop()


def test_flux_takes_a_negative_prompt_through_the_openai_route(flux: ServerProcess) -> None:
    values = {"negative_prompt": "blurry", "true_cfg_scale": 2.0, "max_sequence_length": 32}
    common = {"prompt": "a red fox", "num_inference_steps": 1, "seed": 5, **values}
    generated = flux.post("/generate", json={**common, "width": 64, "height": 64})
    assert generated.status_code == 200, generated.text
    images = flux.post("/v1/images/generations", json={**common, "size": "64x64"})
    assert images.status_code == 200, images.text
    assert base64.b64decode(images.json()["data"][0]["b64_json"]) == generated.content


def test_flux_s_size_multiple_is_a_422_naming_size_on_the_openai_route(
    flux: ServerProcess,
) -> None:
    response = flux.post(
        "/v1/images/generations", json={"prompt": "a fox", "size": "72x64", "n": 1}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "size"
    assert "multiples of 16" in error["message"]
