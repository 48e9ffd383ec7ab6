"""The OpenAI Images API's pure parts: the request with thaw's bounds, a seed per image, and
every failure mapped to OpenAI's error shape with thaw's status codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from handler.config import ImageLimits
from handler.errors import error_response, http_result, openai_path
from handler.openai_schemas import ImagesRequestBase, error_type, images_request_model
from handler.routes.openai_images import model_id
from handler.schemas import MAX_SEED, request_model
from runtime import errors

LIMITS = ImageLimits(max_side=512, max_pixels=256 * 256, max_steps=10)
IMAGES = images_request_model(request_model(LIMITS), max_images=4)


def request(**fields: Any) -> ImagesRequestBase:
    return IMAGES.model_validate({"prompt": "a fox", **fields})


def answer(
    exc: Exception, path: str = "/v1/images/generations"
) -> tuple[int, dict[str, str], dict[str, Any]]:
    response = error_response({"type": "http", "path": path, "root_path": ""}, exc)
    return response.status_code, dict(response.headers), json.loads(bytes(response.body))


@pytest.mark.parametrize(
    ("size", "sides"),
    [("64x96", (64, 96)), ("auto", (None, None)), (None, (None, None))],
)
def test_size_gives_the_sides(size: str | None, sides: tuple[int | None, int | None]) -> None:
    assert request(size=size).sides() == sides


@pytest.mark.parametrize("size", ["64", "64x", "x64", "64X64", "64x64x64", "-64x64", " 64x64"])
def test_a_size_not_shaped_wxh_is_refused(size: str) -> None:
    with pytest.raises(ValidationError, match="WIDTHxHEIGHT"):
        request(size=size)


@pytest.mark.parametrize("size", ["100x64", "1024x64", "512x512"])
def test_a_size_out_of_bounds_is_refused_naming_size(size: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        request(size=size).to_params(request_model(LIMITS), LIMITS)
    assert caught.value.field == "size"
    assert f"size={size}" in caught.value.message


def test_each_image_has_its_own_seed_and_the_same_settings() -> None:
    params = request(n=3, seed=7, size="64x128", num_inference_steps=4).to_params(
        request_model(LIMITS), LIMITS
    )
    assert [p.seed for p in params] == [7, 8, 9]
    assert {(p.width, p.height, p.steps, p.prompt) for p in params} == {(64, 128, 4, "a fox")}
    wrapped = request(n=2, seed=MAX_SEED).to_params(request_model(LIMITS), LIMITS)
    assert [p.seed for p in wrapped] == [MAX_SEED, 0]


def test_thaw_bounds_hold_and_n_is_at_most_the_batch() -> None:
    for fields in ({"n": 5}, {"n": 0}, {"num_inference_steps": 11}, {"prompt": ""}, {"x": 1}):
        with pytest.raises(ValidationError):
            request(**fields)
    with pytest.raises(ValidationError, match=r"at most 4 images a request \(THAW_MAX_BATCH=4\)"):
        request(n=5)
    assert request(user="u", quality="standard", style="vivid", model="dall-e-3").n == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "authentication_error"),
        (404, "invalid_request_error"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (503, "service_unavailable_error"),
        (504, "server_error"),
    ],
)
def test_error_types(status: int, kind: str) -> None:
    assert error_type(status) == kind


def test_a_full_queue_is_a_429_the_client_retries_when_told() -> None:
    status, headers, body = answer(errors.Overloaded("queue full", retry_after=2.2))
    assert status == 429
    assert headers["retry-after"] == "3"
    assert headers["x-should-retry"] == "true"
    assert body == {
        "error": {
            "message": "queue full",
            "type": "rate_limit_error",
            "param": None,
            "code": "overloaded",
            "retry_after": 3,
        }
    }


def test_a_failure_that_would_repeat_is_not_retried() -> None:
    status, headers, body = answer(errors.InferenceFailed("the model raised"))
    assert (status, headers["x-should-retry"]) == (500, "false")
    assert "retry-after" not in headers
    assert body["error"]["type"] == "server_error"


def test_thaw_field_names_become_openai_params() -> None:
    status, _, body = answer(errors.InvalidRequest("too many pixels", field="width"))
    assert (status, body["error"]["param"]) == (422, "size")
    status, _, body = answer(
        RequestValidationError(
            [{"loc": ("body", "n"), "msg": "too big"}, {"loc": ("body", "size"), "msg": "bad"}]
        )
    )
    assert (status, body["error"]["param"]) == (422, "n")
    assert body["error"]["message"] == "n: too big; size: bad"


def test_a_missing_key_asks_for_a_bearer_token() -> None:
    status, headers, body = answer(errors.Unauthorized("no key"))
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert body["error"]["type"] == "authentication_error"


def test_the_same_failure_in_thaw_shape_outside_v1() -> None:
    for exc in (
        errors.InvalidRequest("too many pixels", field="width"),
        RequestValidationError([{"loc": ("body", "n"), "msg": "Value error, too big"}]),
    ):
        openai_status, _, openai_body = answer(exc)
        status, headers, body = answer(exc, "/generate")
        assert status == openai_status == 422
        assert "x-should-retry" not in headers
        assert set(body["error"]) == {"code", "message", "retry_after", "details"}
        assert body["error"]["code"] == openai_body["error"]["code"] == "invalid_request"
        assert body["error"]["message"] == openai_body["error"]["message"]
        assert "Value error" not in body["error"]["message"]
    status, headers, body = answer(errors.Overloaded("queue full", retry_after=0.2), "/jobs")
    assert (status, headers["retry-after"], body["error"]["retry_after"]) == (429, "1", 1)


def test_the_lambda_adapters_own_errors_take_the_shape_of_their_path() -> None:
    error = errors.PayloadTooLarge("over the Lambda response limit", limit_bytes=100)
    result = http_result("/v1/images/generations", error)
    assert (result["statusCode"], result["isBase64Encoded"]) == (413, False)
    assert result["headers"]["content-type"] == "application/json"
    body = json.loads(result["body"])["error"]
    assert (body["type"], body["code"]) == ("invalid_request_error", "payload_too_large")
    thaw = json.loads(http_result("/generate", error)["body"])["error"]
    assert set(thaw) == {"code", "message", "retry_after"}
    assert json.loads(http_result(None, error)["body"])["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("path", "root_path", "openai"),
    [
        ("/v1/images/generations", "", True),
        ("/v1", "", True),
        ("/v1/nope", "", True),
        ("/prod/v1/models", "/prod", True),
        ("/v1nope", "", False),
        ("/generate", "", False),
        ("/prod/generate", "/prod", False),
        ("/", "", False),
    ],
)
def test_the_openai_shape_is_chosen_by_path(path: str, root_path: str, openai: bool) -> None:
    assert openai_path({"type": "http", "path": path, "root_path": root_path}) is openai


@pytest.mark.parametrize(
    ("ref", "shown"),
    [
        ("/root/.cache/thaw/tiny-sd", "tiny-sd"),
        ("/models/sd/", "sd"),
        ("s3://bucket/models/sdxl-turbo", "sdxl-turbo"),
        ("stabilityai/sdxl-turbo", "stabilityai/sdxl-turbo"),
    ],
)
def test_model_ids_hide_server_paths(ref: str, shown: str) -> None:
    assert model_id(ref) == shown
