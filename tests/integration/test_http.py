"""The text-to-image service over real HTTP: one uvicorn process shared by this module."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support.server import ServerProcess

SMALL: dict[str, Any] = {"num_inference_steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess({"THAW_MODEL": str(tiny_model)}).start()
    proc.wait_live(timeout=30)
    # Seen at the first /livez answer, long before the heavy imports are done.
    proc.first_openapi = proc.get("/openapi.json").json()  # type: ignore[attr-defined]
    proc.first_readyz = proc.get("/readyz")  # type: ignore[attr-defined]
    proc.first_health = proc.get("/health").json()  # type: ignore[attr-defined]
    proc.wait_ready(timeout=120)
    yield proc
    assert proc.stop() == 0


def png(response: Any) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def test_livez_answers_while_the_model_warms_up(server: ServerProcess) -> None:
    first = server.first_readyz  # type: ignore[attr-defined]
    assert first.status_code == 503
    assert first.json() == {"ready": False, "status": "warming_up"}
    assert server.first_health["status"] == "warming_up"  # type: ignore[attr-defined]
    assert server.get("/readyz").json() == {"ready": True, "status": "ready"}


def test_head_answers_where_uptime_checkers_look(server: ServerProcess) -> None:
    """Uptime checkers and some load balancers probe with HEAD: the probes and the page answer
    it as GET does, without a body (a 405 read as down)."""
    for path in ("/", "/livez", "/readyz"):
        got = server.client.head(path)
        assert got.status_code == server.get(path).status_code, path
        assert got.content == b""


def test_no_page_loads_scripts_from_another_origin(server: ServerProcess) -> None:
    """FastAPI's /docs and /redoc pull Swagger UI and ReDoc from a CDN, on the origin where the
    playground keeps its API key: they are off; the schema stays at /openapi.json."""
    for path in ("/docs", "/redoc"):
        assert server.get(path).status_code == 404, path
    assert server.get("/openapi.json").status_code == 200
    assert "cdn." not in server.get("/").text


def test_a_png_of_the_requested_size(server: ServerProcess) -> None:
    response = server.post("/generate", json={**SMALL, "prompt": "a red fox", "height": 128})
    image = png(response)
    assert image.size == (64, 128)
    assert response.headers["x-seed"].isdigit()
    timing = response.headers["server-timing"]
    assert all(f"{name};dur=" in timing for name in ("queue", "inference", "encode"))


def test_the_same_seed_gives_the_same_bytes(server: ServerProcess) -> None:
    body = {**SMALL, "prompt": "a lighthouse", "seed": 1234}
    first = server.post("/generate", json=body)
    second = server.post("/generate", json=body)
    other = server.post("/generate", json={**body, "seed": 4321})
    assert first.content == second.content
    assert first.content != other.content
    assert first.headers["x-seed"] == "1234"


def test_the_prompt_changes_the_image(server: ServerProcess) -> None:
    """The embedded model's tokenizer knows its vocabulary: a model that ignored its prompt
    (every prompt encoded alike, as the tiny model's tokenizer did under transformers 5) would
    answer the same image to any prompt with one seed."""
    body = {**SMALL, "seed": 1234}
    lighthouse = server.post("/generate", json={**body, "prompt": "a lighthouse"})
    fox = server.post("/generate", json={**body, "prompt": "a red fox in the snow"})
    assert lighthouse.status_code == fox.status_code == 200
    assert lighthouse.content != fox.content


def test_json_is_returned_when_asked(server: ServerProcess) -> None:
    response = server.post(
        "/generate",
        json={**SMALL, "prompt": "a boat", "seed": 7},
        headers={"Accept": "application/json"},
    )
    body = response.json()
    assert body["seed"] == 7
    assert set(body["timings"]) == {"queue_s", "inference_s", "encode_s", "batch_size"}
    assert body["request_id"] == response.headers["x-request-id"]
    import base64

    assert base64.b64decode(body["image"]).startswith(b"\x89PNG")


def test_get_works_for_a_quick_try(server: ServerProcess) -> None:
    image = png(server.get("/generate", params={"prompt": "moon", "num_inference_steps": 2}))
    assert image.size == (64, 64)  # the tiny model's default size


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "prompt", "Field required"),
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"prompt": "x", "width": 100}, "width", "multiple of 8"),
        ({"prompt": "x", "height": 32}, "height", "greater than or equal to 64"),
        ({"prompt": "x", "num_inference_steps": 101}, "num_inference_steps", "100"),
        ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps", "1"),
        ({"prompt": "x", "guidance_scale": -1}, "guidance_scale", "0"),
        ({"prompt": "x", "seed": -5}, "seed", "0"),
        ({"prompt": "x", "width": 2048, "height": 2048}, "body", "1048576 pixels"),
        ({"prompt": "x", "colour": "red"}, "colour", "Extra inputs"),
        ({"prompt": "x" * 2001}, "prompt", "2000"),
        # JSON's true and false are not numbers (pydantic's lax mode reads them as 1 and 0).
        ({"prompt": "x", "num_inference_steps": True}, "num_inference_steps", "not true/false"),
        ({"prompt": "x", "guidance_scale": False}, "guidance_scale", "not true/false"),
        ({"prompt": "x", "seed": True}, "seed", "not true/false"),
        ({"prompt": "x", "width": True}, "width", "not true/false"),
    ],
)
def test_invalid_requests_get_422_naming_the_field_and_bound(
    server: ServerProcess, body: dict[str, Any], field: str, words: str
) -> None:
    response = server.post("/generate", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert words in error["message"]
    assert field in [d["field"] for d in error["details"]]


def test_a_body_that_is_not_json_gets_422(server: ServerProcess) -> None:
    response = server.post(
        "/generate", content=b"prompt=cat", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    broken = server.post(
        "/generate", content=b'{"prompt": ', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    # An integer of more digits than Python's int parser takes (4,300) is a ValueError, not a
    # JSONDecodeError: still the body at fault, a 422 like any other body that cannot be read.
    huge = server.post(
        "/generate",
        content=b'{"prompt": "x", "num_inference_steps": ' + b"9" * 5000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 422, huge.text
    assert [d["field"] for d in huge.json()["error"]["details"]] == ["body"]
    not_utf8 = server.post(
        "/generate", content=b'{"prompt": "\xff"}', headers={"content-type": "application/json"}
    )
    assert not_utf8.status_code == 422, not_utf8.text
    assert [d["field"] for d in not_utf8.json()["error"]["details"]] == ["body"]


def test_a_body_over_the_limit_gets_413(server: ServerProcess) -> None:
    response = server.post("/generate", json={"prompt": "x" * 70_000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_unknown_paths_share_the_error_shape(server: ServerProcess) -> None:
    response = server.get("/nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not Found", "retry_after": None}
    }


def test_health_reports_the_load(server: ServerProcess) -> None:
    report = server.get("/health").json()
    assert report["status"] == "ready"
    assert report["load_attempts"] == 1
    assert report["device"] == "cpu"
    assert report["dtype"] == "float32"
    names = [phase["name"] for phase in report["phases"]]
    assert {"import", "build", "to_device"} <= set(names)
    assert names.index("import") < names.index("build") < names.index("to_device")
    assert report["load_seconds"] > 0
    for key in ("last_error", "inflight", "queued", "uptime_s", "cold_start"):
        assert key in report


def request_fields(openapi: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = openapi["components"]["schemas"]["GenerateRequest"]["properties"]
    return fields


def test_openapi_shows_what_the_loaded_model_takes(server: ServerProcess) -> None:
    # Before the load, the edge's schema: the fields of every pipeline family.
    edge = request_fields(server.first_openapi)  # type: ignore[attr-defined]
    assert {"true_cfg_scale", "max_sequence_length"} <= set(edge)
    # After it, Stable Diffusion's call: no T5 encoder, no true CFG; its own defaults.
    fields = request_fields(server.get("/openapi.json").json())
    assert "true_cfg_scale" not in fields
    assert "max_sequence_length" not in fields
    assert fields["width"]["default"] == fields["height"]["default"] == 64
    assert fields["num_inference_steps"]["default"] == 50


def test_a_field_the_model_does_not_take_is_a_422_naming_it(server: ServerProcess) -> None:
    response = server.post("/generate", json={**SMALL, "prompt": "x", "max_sequence_length": 77})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "max_sequence_length: this model (StableDiffusionPipeline) does not take "
        "max_sequence_length"
    )
