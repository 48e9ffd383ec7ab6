"""The OpenAI-compatible Images API, driven by the official `openai` package (pinned in
requirements-dev.txt) against a real server on loopback.

What a tool that speaks the OpenAI Images API needs: `images.generate` in both response formats,
`n` images from one batch with a seed each, errors raised as the client's own exception types
(with the parameter named), the key checked, a 429 the client's retry waits out as
`Retry-After` says, and `models.list`.
"""

from __future__ import annotations

import base64
import io
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.support.server import ServerProcess

KEY = "openai-compat-key-0123456789"
# The server's own fields go in `extra_body`, as the OpenAI client passes anything it lacks.
QUICK: dict[str, Any] = {"num_inference_steps": 2}
FAULTY = "tests.support.faulty_loader:load"
SLOW_S = 1.5


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        {"THAW_MODEL": str(tiny_model), "THAW_API_KEY": KEY, "THAW_MAX_BATCH": "4"}
    ).start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def client_for(server: ServerProcess, *, key: str = KEY, **kwargs: Any) -> openai.OpenAI:
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, **kwargs)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with client_for(server) as made:
        yield made


def decode(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_b64_json_gives_a_png_of_the_requested_size(client: openai.OpenAI) -> None:
    before = int(time.time())
    result = client.images.generate(
        prompt="a red fox",
        model="tiny-sd",
        size="64x96",
        response_format="b64_json",
        user="someone",  # accepted and ignored
        extra_body=QUICK,
    )
    assert before <= result.created <= int(time.time()) + 1
    assert result.data is not None
    (item,) = result.data
    assert item.url is None
    image = decode(item.b64_json)
    assert image.format == "PNG"
    assert image.size == (64, 96)
    assert isinstance(item.model_extra, dict)
    assert isinstance(item.model_extra["seed"], int)


def test_url_points_at_the_png_without_needing_the_key(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    result = client.images.generate(
        prompt="a lighthouse", size="64x64", response_format="url", extra_body=QUICK
    )
    assert result.data is not None
    (item,) = result.data
    assert item.b64_json is None
    assert item.url is not None
    assert item.url.startswith(f"{server.url}/v1/images/results/")
    # Fetched as an <img src> would: no key. The id in the URL is the capability.
    fetched = httpx.get(item.url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    # An id that was never handed out is a 404 in the OpenAI shape.
    missing = httpx.get(f"{server.url}/v1/images/results/{'0' * 32}", timeout=30)
    assert missing.status_code == 404
    assert set(missing.json()["error"]) >= {"message", "type", "param", "code"}


def test_n_images_come_from_one_batch_each_with_its_own_seed(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    raw = client.images.with_raw_response.generate(
        prompt="a green valley",
        n=3,
        size="64x64",
        response_format="b64_json",
        extra_body={**QUICK, "seed": 40},
    )
    assert raw.headers["x-batch-size"] == "3"  # one pipeline call made all three
    result = raw.parse()
    assert result.data is not None
    seeds = [item.model_extra["seed"] for item in result.data]  # type: ignore[index]
    assert seeds == [40, 41, 42]
    images = [pixels(decode(item.b64_json)) for item in result.data]
    assert np.abs(images[0] - images[1]).max() > 8
    assert np.abs(images[1] - images[2]).max() > 8
    # Each is the image its seed gives alone (a batched GEMM may round a level on a few pixels).
    alone = server.post(
        "/generate",
        json={**QUICK, "prompt": "a green valley", "width": 64, "height": 64, "seed": 41},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert alone.status_code == 200, alone.text
    difference = np.abs(pixels(Image.open(io.BytesIO(alone.content))) - images[1])
    assert difference.max() <= 1
    assert (difference == 0).mean() >= 0.99


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"size": "100x100"}, "size"),  # not a multiple of 8
        ({"size": "4096x64"}, "size"),  # a side over THAW_MAX_SIDE
        ({"size": "2048x2048"}, "size"),  # over the pixel budget
        ({"size": "large"}, "size"),
        ({"n": 5}, "n"),  # over THAW_MAX_BATCH=4
        ({"extra_body": {"num_inference_steps": 1000}}, "num_inference_steps"),
    ],
)
def test_bad_parameters_raise_unprocessable_entity_naming_the_param(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.images.generate(prompt="x", **{"size": "64x64", **fields})
    error = caught.value
    assert error.status_code == 422
    assert error.param == param
    assert error.type == "invalid_request_error"
    assert error.code == "invalid_request"
    assert param in error.message


def test_a_missing_or_wrong_key_raises_authentication_error(server: ServerProcess) -> None:
    with (
        client_for(server, key="not-the-key") as wrong,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        wrong.images.generate(prompt="x", size="64x64", extra_body=QUICK)
    assert caught.value.type == "authentication_error"
    with client_for(server, key="not-the-key") as wrong, pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    missing = httpx.post(f"{server.url}/v1/images/generations", json={"prompt": "x"}, timeout=30)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["type"] == "authentication_error"


def assert_openai_shape(body: object, *, kind: str, code: str) -> None:
    """The client's `error.body` (the inner object) is OpenAI's, not thaw's `/generate` shape."""
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code", "retry_after"}
    assert (body["type"], body["code"]) == (kind, code)
    assert "details" not in body


def test_a_body_over_the_limit_is_refused_in_openai_shape(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    # Refused from its Content-Length, before the body is read (THAW_MAX_BODY_BYTES, 64 KiB).
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(prompt="x" * 70_000, size="64x64", extra_body=QUICK)
    error = caught.value
    assert error.status_code == 413
    assert (error.type, error.code) == ("invalid_request_error", "payload_too_large")
    assert_openai_shape(error.body, kind="invalid_request_error", code="payload_too_large")
    # Sent without a Content-Length (chunked), it is refused while it is read: the same answer.
    chunks = iter([b'{"prompt": "', b"x" * 70_000, b'"}'])
    streamed = httpx.post(
        f"{server.url}/v1/images/generations",
        content=chunks,
        headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"},
        timeout=30,
    )
    assert streamed.status_code == 413
    assert_openai_shape(
        streamed.json()["error"], kind="invalid_request_error", code="payload_too_large"
    )


def test_unknown_paths_and_methods_under_v1_answer_in_openai_shape(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.get("/nope", cast_to=httpx.Response)
    assert missing.value.status_code == 404
    assert_openai_shape(missing.value.body, kind="invalid_request_error", code="not_found")
    with pytest.raises(openai.APIStatusError) as wrong_method:
        client.get("/images/generations", cast_to=httpx.Response)
    assert wrong_method.value.status_code == 405
    assert "POST" in wrong_method.value.response.headers["allow"]
    assert_openai_shape(
        wrong_method.value.body, kind="invalid_request_error", code="method_not_allowed"
    )
    # Outside /v1/ the answer keeps thaw's own shape.
    elsewhere = server.get("/v1nope")
    assert elsewhere.status_code == 404
    assert set(elsewhere.json()["error"]) == {"code", "message", "retry_after"}


def test_models_list_shows_the_loaded_model(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert [model.id for model in models] == ["tiny-sd"]
    (model,) = models
    assert model.object == "model"
    assert model.owned_by == "thaw"
    assert client.models.retrieve("tiny-sd").id == "tiny-sd"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("dall-e-3")


def test_openapi_documents_the_routes_with_their_bounds(server: ServerProcess) -> None:
    spec = server.get("/openapi.json").json()
    operation = spec["paths"]["/v1/images/generations"]["post"]
    reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][reference.rsplit("/", 1)[-1]]
    properties = schema["properties"]
    assert properties["n"]["maximum"] == 4
    assert {"prompt", "model", "size", "response_format", "user", "seed"} <= set(properties)
    assert "/v1/models" in spec["paths"]


@pytest.fixture(scope="module")
def busy_server(tiny_model: Path) -> Iterator[ServerProcess]:
    """One place in all (one running, none queued); the prompt "__slow__" holds it SLOW_S."""
    proc = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": FAULTY,
            "THAW_WORKER": "inline",
            "THAW_TEST_SLOW_S": str(SLOW_S),
            "THAW_MAX_CONCURRENCY": "1",
            "THAW_QUEUE_SIZE": "0",
            "THAW_DEFAULT_STEPS": "1",
        }
    ).start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_a_429_is_waited_out_as_retry_after_says(busy_server: ServerProcess) -> None:
    seen: list[tuple[float, str, int | None, str | None]] = []

    def on_request(request: Any) -> None:
        seen.append((time.monotonic(), "request", None, None))

    def on_response(response: Any) -> None:
        seen.append(
            (
                time.monotonic(),
                "response",
                response.status_code,
                response.headers.get("retry-after"),
            )
        )

    hooks = {"request": [on_request], "response": [on_response]}
    with client_for(busy_server, key="unused") as once:
        # A served slow request teaches the server how long one takes: its Retry-After.
        once.images.generate(prompt="__slow__", size="64x64")
    slow = threading.Thread(
        target=lambda: busy_server.post(
            "/generate", json={"prompt": "__slow__", "width": 64, "height": 64}
        ),
        daemon=True,
    )
    slow.start()
    deadline = time.monotonic() + 10
    while busy_server.get("/health").json()["inflight"] < 1:
        assert time.monotonic() < deadline, "the slow request never started"
        time.sleep(0.02)

    with (
        client_for(busy_server, key="unused") as impatient,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        impatient.images.generate(prompt="x", size="64x64")
    assert caught.value.type == "rate_limit_error"
    assert caught.value.code == "overloaded"

    http = openai.DefaultHttpxClient(event_hooks=hooks)
    with client_for(busy_server, key="unused", http_client=http, max_retries=2) as patient:
        started = time.monotonic()
        result = patient.images.generate(prompt="a harbour", size="64x64")
        took = time.monotonic() - started
    slow.join(timeout=30)
    assert result.data is not None
    assert len(result.data) == 1
    statuses = [status for _, kind, status, _ in seen if kind == "response"]
    assert statuses[0] == 429
    assert statuses[-1] == 200
    waits = []
    for (answered, kind, status, retry_after), (asked, _, _, _) in itertools.pairwise(seen):
        if kind == "response" and status == 429:
            assert retry_after is not None
            waits.append((asked - answered, float(retry_after)))
    assert waits
    for waited, retry_after in waits:
        # The client slept what the server said, not its own shorter backoff (0.5 s, 1 s).
        assert retry_after >= 1
        assert waited >= retry_after - 0.05, (waited, retry_after)
    assert took < 30


def test_a_client_that_goes_away_cancels_its_generation(busy_server: ServerProcess) -> None:
    with (
        client_for(busy_server, key="unused", timeout=0.5) as hasty,
        pytest.raises(openai.APITimeoutError),
    ):
        hasty.images.generate(prompt="__slow__", size="64x64")
    deadline = time.monotonic() + 10
    while "client gone: generation canceled" not in busy_server.log:
        assert time.monotonic() < deadline, busy_server.log[-3000:]
        time.sleep(0.05)
