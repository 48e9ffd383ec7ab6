"""A body that is not JSON at all: FastAPI reports it at `("body", <character offset>)`. That
offset is no field, so neither shape names it as one (OpenAI's `param`, thaw's `details`): the
body as a whole is at fault."""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError

from handler.errors import error_response


def not_json(offset: int = 10) -> RequestValidationError:
    """What FastAPI raises for `{"prompt":` (fastapi.routing, json_invalid)."""
    return RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", offset),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": "Expecting value"},
            }
        ]
    )


def answer(path: str, exc: Exception) -> tuple[int, dict[str, Any]]:
    response = error_response({"type": "http", "path": path, "root_path": ""}, exc)
    return response.status_code, json.loads(bytes(response.body))


def test_openai_shape_names_no_param_for_a_body_that_is_not_json() -> None:
    status, body = answer("/v1/images/generations", not_json())
    assert status == 422
    error = body["error"]
    assert error["param"] == "body", error
    assert not error["message"].startswith("10"), error
    assert "JSON" in error["message"]
    assert "character 10" in error["message"], error


def test_thaw_shape_puts_it_on_the_body() -> None:
    status, body = answer("/generate", not_json())
    assert status == 422
    (detail,) = body["error"]["details"]
    assert detail["field"] == "body", detail
    assert "character 10" in detail["message"], detail


def test_an_unknown_width_field_on_v1_is_named_as_sent() -> None:
    """OpenAI's request has no `width`: a client that sends one is told `width` is refused, not
    pointed at `size`, which it may not have sent at all."""
    unknown = RequestValidationError(
        [
            {
                "type": "extra_forbidden",
                "loc": ("body", "width"),
                "msg": "Extra inputs are not permitted",
            }
        ]
    )
    status, body = answer("/v1/images/generations", unknown)
    assert status == 422
    assert body["error"]["param"] == "width", body
