"""The OpenAI-compatible API against edge inputs from the real `openai` client (outside review):
every one is answered with the client's matching exception and thaw's status code, never a 500;
and a client that arrives while the model warms up gets its image by its own retries.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import ServerProcess

KEY = "openai-edges-key-0123456789"
QUICK: dict[str, Any] = {"num_inference_steps": 1}


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cache = tmp_path_factory.mktemp("openai-edges")
    proc = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_API_KEY": KEY,
            "THAW_MAX_BATCH": "2",
            "THAW_CACHE_DIR": str(cache),
            "THAW_JOBS_DIR": str(cache / "jobs"),
        }
    ).start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60) as made:
        yield made


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": 10**12}, "n"),
        ({"size": "64x64x"}, "size"),
        ({"size": " 512x512"}, "size"),
        ({"size": "0x0"}, "size"),
        ({"size": "autox"}, "size"),
        ({"size": "64X64"}, "size"),
        ({"size": "999999x999999"}, "size"),
        ({"response_format": "b64"}, "response_format"),
        ({"extra_body": {"stream": True}}, "stream"),
        ({"extra_body": {"background": "transparent"}}, "background"),
        ({"extra_body": {"output_format": "jpeg"}}, "output_format"),
        ({"extra_body": {"width": 64}}, "width"),  # OpenAI's request has no width: as sent
        ({"extra_body": {"seed": -1}}, "seed"),
        ({"extra_body": {"guidance_scale": "Infinity"}}, "guidance_scale"),
        ({"n": True}, "n"),
        ({"extra_body": {"num_inference_steps": True}}, "num_inference_steps"),
        ({"extra_body": {"seed": False}}, "seed"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "a" * 60_000}, "prompt"),  # under the body limit, over the prompt's
    ],
)
def test_an_edge_input_is_a_422_naming_its_param(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    extra = {**QUICK, **fields.pop("extra_body", {})}
    request: dict[str, Any] = {"prompt": "x", "size": "64x64", **fields}
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.images.generate(**request, extra_body=extra)
    assert caught.value.status_code == 422
    assert caught.value.param == param, caught.value.message
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    "fields",
    [
        {"quality": "hd", "style": "vivid", "user": "someone", "model": "dall-e-3"},
        {"prompt": "ein Fuchs 🦊 \u202e <script>alert(1)</script> 狐狸"},
        {"size": "auto"},
    ],
)
def test_accepted_and_ignored_values_give_an_image(
    client: openai.OpenAI, fields: dict[str, Any]
) -> None:
    request: dict[str, Any] = {"prompt": "x", "size": "64x64", **fields}
    result = client.images.generate(**request, extra_body=QUICK)
    assert result.data is not None
    assert len(result.data) == 1
    assert result.data[0].b64_json


def test_a_body_over_the_limit_is_a_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(prompt="a" * 100_000, size="64x64", extra_body=QUICK)
    assert caught.value.status_code == 413
    assert caught.value.code == "payload_too_large"


def test_a_body_that_is_not_json_names_the_body(server: ServerProcess) -> None:
    answer = httpx.post(
        f"{server.url}/v1/images/generations",
        content=b'{"prompt":',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["param"] == "body"
    assert error["message"].startswith("body: not valid JSON")


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer", 401),
        ("Bearer not-the-key", 401),
        (f"Basic {KEY}", 401),
        (f"Bearer {KEY} extra", 401),
        (f"bearer {KEY}", 200),  # the scheme is case-insensitive (RFC 9110)
        (f"Bearer  {KEY}", 200),
    ],
)
def test_the_authorization_header_as_sent(
    server: ServerProcess, authorization: str | None, status: int
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = httpx.get(f"{server.url}/v1/models", headers=headers, timeout=30)
    assert answer.status_code == status, answer.text
    if status == 401:
        assert answer.json()["error"]["type"] == "authentication_error"


def test_the_openai_client_waits_out_a_warm_up_by_its_own_retries(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Each attempt waits THAW_WARM_WAIT_S for the load, then is answered 503 with
    `Retry-After` and `x-should-retry: true`; the client's retries carry it to the image."""
    proc = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": "tests.support.slow_loader:load",
            "THAW_TEST_LOAD_DELAY_S": "4",
            "THAW_WARM_WAIT_S": "2",
            "THAW_CACHE_DIR": str(tmp_path / "cache"),
            "THAW_JOBS_DIR": str(tmp_path / "jobs"),
        }
    ).start()
    statuses: list[tuple[int, str | None, str | None]] = []

    def on_response(response: httpx.Response) -> None:
        statuses.append(
            (
                response.status_code,
                response.headers.get("retry-after"),
                response.headers.get("x-should-retry"),
            )
        )

    try:
        proc.wait_live()
        http = openai.DefaultHttpxClient(event_hooks={"response": [on_response]})
        with openai.OpenAI(
            base_url=f"{proc.url}/v1", api_key="unused", max_retries=20, http_client=http
        ) as patient:
            started = time.monotonic()
            result = patient.images.generate(prompt="x", size="64x64", extra_body=QUICK)
            took = time.monotonic() - started
    finally:
        proc.stop()
    assert result.data is not None
    assert len(result.data) == 1
    assert statuses[-1][0] == 200
    refused = statuses[:-1]
    assert refused, "the load was over before the first attempt: nothing tested"
    for status, retry_after, should_retry in refused:
        assert status == 503
        assert retry_after is not None
        assert should_retry == "true"
    assert took < 120
