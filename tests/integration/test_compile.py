"""`torch.compile` still works for a user who asks for it: a `THAW_LOADER` that compiles the
denoiser (tests/support/compiled_loader.py, docs/model-sources.md's recipe) serves, from a real
server, the image the generic diffusers path gives for the same request, byte for byte, with the
compilation paid before the model is ready. SD's UNet and Flux's transformer."""

from __future__ import annotations

import json

import pytest

from tests.support.families import built
from tests.support.server import ServerProcess

REQUEST = {"prompt": "a lighthouse at dusk", "num_inference_steps": 2, "seed": 11}


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_a_compiled_denoiser_serves_the_generic_path_s_image(family: str) -> None:
    model = str(built(family))
    plain = ServerProcess({"THAW_MODEL": model}).start()
    compiled = ServerProcess(
        {"THAW_MODEL": model, "THAW_LOADER": "tests.support.compiled_loader:load"}
    ).start()
    try:
        plain.wait_ready(timeout=180)
        compiled.wait_ready(timeout=180)
        phases = [p["name"] for p in compiled.get("/health").json()["phases"]]
        assert "compile" in phases
        record = next(
            json.loads(line) for line in compiled.log.splitlines() if "denoiser compiled" in line
        )
        assert record["graphs"] >= 1  # dynamo traced it: the model is not running uncompiled

        expected = plain.post("/generate", json=REQUEST)
        got = compiled.post("/generate", json=REQUEST)
        assert expected.status_code == got.status_code == 200, got.text
        assert expected.headers["content-type"] == got.headers["content-type"] == "image/png"
        assert got.content == expected.content
    finally:
        plain.stop()
        compiled.stop()
