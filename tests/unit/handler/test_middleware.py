"""handler.middleware: the request id echoed in `X-Request-Id` is the client's only when it is
well formed as a whole; anything else (a trailing newline included) gets a fresh id."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from handler.middleware import RequestContext, request_id_for
from runtime.observe.telemetry import Telemetry


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def echoed_id(supplied: bytes) -> str:
    """Call the middleware as a server would and return the `x-request-id` it answered."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/livez",
        "headers": [(b"x-request-id", supplied)],
    }
    asyncio.run(RequestContext(_ok, Telemetry())(scope, receive, send))
    headers = dict(sent[0]["headers"])
    return str(headers[b"x-request-id"].decode("latin-1"))


def test_a_well_formed_id_is_echoed() -> None:
    assert echoed_id(b"abc-123:4.5_6") == "abc-123:4.5_6"


@pytest.mark.parametrize(
    "supplied", [b"abc\n", b"abc\r\n", b"abc\nSet-Cookie: x=1", b"a b", b"", b"x" * 129]
)
def test_an_id_with_anything_after_it_is_replaced(supplied: bytes) -> None:
    echoed = echoed_id(supplied)
    assert echoed != supplied.decode("latin-1")
    assert echoed.isalnum()


def test_a_lambda_request_id_must_match_as_a_whole() -> None:
    context = SimpleNamespace(aws_request_id="3f2a-1\n")
    scope = {"type": "http", "headers": [], "aws.context": context}
    assert request_id_for(scope) != "3f2a-1\n"
    context.aws_request_id = "3f2a-1"
    assert request_id_for(scope) == "3f2a-1"
