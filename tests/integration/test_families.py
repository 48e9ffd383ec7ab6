"""SDXL, SD3 and Flux through the contract Stable Diffusion's tests hold (test_http,
test_batching, test_lambda): over HTTP, an image at the model's own default size, a 422 naming a
field the model does not take, `/openapi.json` showing the fields it does take with its
defaults, and batching that gives each seed its own image; through Lambda (the real awslambdaric
against the emulator), an image and the same 422.

Per family, one server and one Lambda environment, started together so their imports overlap,
and only one family's at a time (module-scoped). The SDXL model is read from a Hugging Face cache
folder by id, and the Flux one from a cache folder holding only fp16 variant files
(`*.fp16.safetensors`), which thaw finds without being told.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from handler.terms import OPTIONAL_FIELDS
from tests.support.families import FAMILIES, built
from tests.support.hub_cache import folder_files, hub_cache
from tests.support.lambda_emulator import RuntimeApiEmulator
from tests.support.server import ServerProcess

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = {"num_inference_steps": 2, "width": 64, "height": 64}
EVENT = Path(__file__).resolve().parents[1] / "fixtures" / "events" / "function_url_generate.json"
NEW_FAMILIES = [name for name in FAMILIES if name != "sd"]  # sd: test_http, test_lambda


def model_env(family: str, tmp: Path) -> dict[str, str]:
    """Where the family's server finds its model: a folder, or a hub id in a hub cache."""
    if family == "sdxl":
        repo = "thaw-test/tiny-sdxl"
        cache = hub_cache(tmp / "hub", repo, folder_files(built("sdxl")))
    elif family == "flux":
        repo = "thaw-test/tiny-flux-fp16"
        cache = hub_cache(tmp / "hub", repo, folder_files(built("flux", variant="fp16")))
    else:
        return {"THAW_MODEL": str(built(family))}
    return {"THAW_MODEL": repo, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


@dataclass
class Family:
    name: str
    server: ServerProcess
    function: RuntimeApiEmulator


@pytest.fixture(scope="module", params=NEW_FAMILIES)
def family(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Family]:
    name: str = request.param
    env = model_env(name, tmp_path_factory.mktemp(name))
    # Two at most in a call, gathered for up to 0.5 s: the two concurrent requests of the
    # batching test share one call.
    server = ServerProcess({**env, "THAW_MAX_BATCH": "2", "THAW_BATCH_WINDOW_MS": "500"})
    function = RuntimeApiEmulator()
    try:
        server.start()
        # Provisioned concurrency: loaded in INIT, so both load at once.
        function.start({**env, "THAW_TORCH_THREADS": "1"}, init_type="provisioned-concurrency")
        server.wait_ready()
        function.wait_init(150)
        yield Family(name, server, function)
    finally:
        server.stop()
        function.close()


def pixels(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_an_image_at_the_models_own_default_size(family: Family) -> None:
    server = family.server
    response = server.post("/generate", json={"prompt": "a red fox", "num_inference_steps": 2})
    assert response.status_code == 200, response.text
    native = FAMILIES[family.name].native
    assert pixels(response.content).shape == (native, native, 3)


def test_a_field_the_model_does_not_take_is_a_422_naming_it(
    family: Family,
) -> None:
    server = family.server
    field, value = FAMILIES[family.name].refused
    response = server.post("/generate", json={"prompt": "a fox", **QUICK, field: value})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"{field}: ")
    assert FAMILIES[family.name].pipeline in error["message"]


def test_true_guidance_without_a_negative_prompt_is_a_422_not_a_silent_no_op(
    family: Family,
) -> None:
    """Flux's call runs true classifier-free guidance only when it has a negative prompt:
    `true_cfg_scale` above 1 alone would be ignored, and the user would pay for nothing they
    asked. A model that does not take `true_cfg_scale` refuses the field itself."""
    if "true_cfg_scale" not in FAMILIES[family.name].takes:
        response = family.server.post(
            "/generate", json={"prompt": "a fox", **QUICK, "true_cfg_scale": 4.0}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith("true_cfg_scale: ")
        return
    response = family.server.post(
        "/generate", json={"prompt": "a fox", **QUICK, "true_cfg_scale": 4.0}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["message"].startswith("true_cfg_scale: "), error
    assert "negative_prompt" in error["message"]
    assert [d["field"] for d in error["details"]] == ["true_cfg_scale"]
    # With a negative prompt it is taken, and 1 (no true guidance) needs none.
    for body in ({"negative_prompt": "blurry", "true_cfg_scale": 4.0}, {"true_cfg_scale": 1.0}):
        response = family.server.post("/generate", json={"prompt": "a fox", **QUICK, **body})
        assert response.status_code == 200, (body, response.text)


def test_openapi_shows_what_the_loaded_model_takes(family: Family) -> None:
    server = family.server
    expected = FAMILIES[family.name]
    schema = server.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]
    fields: dict[str, Any] = schema["properties"]
    assert {name for name in fields if name in OPTIONAL_FIELDS} == expected.takes
    assert {"prompt", "seed"} <= set(fields)
    assert fields["width"]["default"] == fields["height"]["default"] == expected.native
    assert fields["num_inference_steps"]["default"] == expected.steps
    assert expected.pipeline in schema["description"]
    health = server.get("/health").json()
    assert health["pipeline"]["pipeline"] == expected.pipeline
    assert health["pipeline"]["native_size"] == [expected.native, expected.native]


def test_models_load_from_a_hub_cache_folder_and_from_fp16_variant_files(family: Family) -> None:
    health = family.server.get("/health").json()
    build = next(phase for phase in health["phases"] if phase["name"] == "build")
    hub_id, variant = {
        "sdxl": ("thaw-test/tiny-sdxl", None),
        "sd3": (None, None),
        "flux": ("thaw-test/tiny-flux-fp16", "fp16"),  # found without THAW_VARIANT
    }[family.name]
    if hub_id is not None:
        assert health["model"] == hub_id
    assert build["detail"]["variant"] == variant
    assert health["dtype"] == "float32"  # fp16 files, computed in float32 on a CPU


def test_two_seeds_share_a_call_and_each_gets_its_own_image(
    family: Family,
) -> None:
    server = family.server
    common = {**QUICK, **FAMILIES[family.name].extras}
    jobs = [
        {"prompt": "a red lighthouse", "negative_prompt": "blurry", "seed": 11},
        {"prompt": "a blue harbour", "negative_prompt": "dark", "seed": 12},
    ]
    alone = []
    for job in jobs:
        response = server.post("/generate", json={**common, **job})
        assert response.status_code == 200, response.text
        alone.append(pixels(response.content))

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/generate", json={**common, **job}) for job in jobs)
            )

    responses = asyncio.run(together())
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.headers["x-batch-size"] for r in responses] == ["2", "2"]
    for job, response, single in zip(jobs, responses, alone, strict=True):
        assert response.headers["x-seed"] == str(job["seed"])
        # A batched GEMM may round a few pixels one 8-bit level apart (see test_batching).
        difference = np.abs(pixels(response.content) - single)
        assert difference.max() <= 1, job
        assert (difference == 0).mean() >= 0.99, job
    assert np.abs(alone[0] - alone[1]).max() > 8  # two seeds, two images


def invoke(family: Family, body: dict[str, object]) -> dict[str, object]:
    """A function-URL POST /generate with `body`; the Lambda result."""
    event = json.loads(EVENT.read_text())
    event["body"] = json.dumps(body)
    answer = family.function.invoke(event, timeout_ms=60_000)
    assert answer.outcome == "response", answer.body
    result: dict[str, object] = answer.result
    return result


def test_through_lambda_an_image_with_what_the_model_takes(family: Family) -> None:
    body = {"prompt": "a red fox", **QUICK, **FAMILIES[family.name].extras, "seed": 7}
    result = invoke(family, body)
    assert result["statusCode"] == 200, result
    assert result["isBase64Encoded"] is True
    assert pixels(base64.b64decode(str(result["body"]))).shape == (64, 64, 3)


def test_through_lambda_a_field_the_model_does_not_take_is_a_422(family: Family) -> None:
    field, value = FAMILIES[family.name].refused
    result = invoke(family, {"prompt": "a fox", **QUICK, field: value})
    assert result["statusCode"] == 422, result
    assert json.loads(str(result["body"]))["error"]["message"].startswith(f"{field}: ")
