"""Event classification and result building, from recorded events of each source."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.aws.events import (
    MAX_RESPONSE_BYTES,
    EventKind,
    InitType,
    WarmupSource,
    classify,
    http_error,
    http_path,
    parse_function_arn,
    payload_size,
    within_payload_limit,
)

EVENTS = Path(__file__).resolve().parents[2] / "fixtures" / "events"


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@pytest.fixture(autouse=True)
def event_loop_for_mangum() -> Iterator[None]:
    """Mangum adopts the current event loop (else makes one it never closes); lend one, close it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("function_url_generate.json", "/generate"),
        ("function_url_health.json", "/health"),
        ("http_api_v2_generate_get.json", "/generate"),
        ("api_gateway_rest_health.json", "/health"),
        ("alb_generate.json", "/generate"),
    ],
)
def test_http_events_of_every_source_go_to_mangum(name: str, path: str) -> None:
    from mangum import Mangum

    event = load(name)
    assert classify(event).kind is EventKind.HTTP
    assert http_path(event) == path
    # The same event is one Mangum can match (it raises RuntimeError on any other).
    assert Mangum(lambda scope, receive, send: None, lifespan="off").infer(event, None)


@pytest.mark.parametrize(
    ("name", "source", "concurrency"),
    [
        ("eventbridge_scheduled.json", WarmupSource.SCHEDULE, 1),
        ("serverless_plugin_warmup.json", WarmupSource.PLUGIN, 1),
        ("thaw_warmup.json", WarmupSource.THAW, 3),
    ],
)
def test_warmup_pings_are_recognised(name: str, source: WarmupSource, concurrency: int) -> None:
    classified = classify(load(name))
    assert classified.kind is EventKind.WARMUP
    assert classified.warmup is not None
    assert classified.warmup.source is source
    assert classified.warmup.concurrency == concurrency


def test_a_scheduled_event_is_one_mangum_cannot_handle() -> None:
    from mangum import Mangum

    with pytest.raises(RuntimeError, match="unable to infer"):
        Mangum(lambda scope, receive, send: None, lifespan="off").infer(
            load("eventbridge_scheduled.json"), None
        )


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [(0, 1), (-5, 1), ("7", 7), (None, 1), (True, 1), (10_000, 100), ("many", 1)],
)
def test_warmup_concurrency_is_clamped(concurrency: Any, expected: int) -> None:
    warmup = classify({"thaw": "warmup", "concurrency": concurrency}).warmup
    assert warmup is not None
    assert warmup.concurrency == expected


def test_hold_is_read_from_hold_ms_and_bounded() -> None:
    assert classify({"thaw": "warmup", "hold_ms": 250}).warmup.hold_s == 0.25  # type: ignore[union-attr]
    assert classify({"thaw": "warmup", "hold_ms": 10**9}).warmup.hold_s == 10.0  # type: ignore[union-attr]
    assert classify({"thaw": "warmup", "hold_ms": "x"}).warmup.hold_s == 0.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "event",
    [
        load("s3_put.json"),
        {},
        {"source": "aws.events", "detail-type": "EC2 Instance State-change Notification"},
        {"thaw": "something-else"},
        ["not", "a", "mapping"],
        "warmup",
    ],
)
def test_anything_else_is_unsupported_with_a_reason(event: Any) -> None:
    classified = classify(event)
    assert classified.kind is EventKind.UNSUPPORTED
    assert classified.reason


def test_http_error_has_the_one_error_shape_and_retry_after() -> None:
    result = http_error(503, "warming_up", "still loading", retry_after=2.2)
    assert result["statusCode"] == 503
    assert result["headers"]["retry-after"] == "3"
    assert json.loads(result["body"]) == {
        "error": {"code": "warming_up", "message": "still loading", "retry_after": 3}
    }


def test_a_response_over_the_limit_becomes_a_413() -> None:
    small = {"statusCode": 200, "headers": {}, "body": "x" * 100, "isBase64Encoded": True}
    assert within_payload_limit(small) is small
    big = {**small, "body": "A" * MAX_RESPONSE_BYTES}
    assert payload_size(big) > MAX_RESPONSE_BYTES
    result = within_payload_limit(big)
    assert result["statusCode"] == 413
    error = json.loads(result["body"])["error"]
    assert error["code"] == "payload_too_large"
    assert str(MAX_RESPONSE_BYTES) in error["message"]


def test_function_arns_give_name_and_qualifier() -> None:
    base = "arn:aws:lambda:us-east-1:123456789012:function:thaw"
    assert parse_function_arn(base) == ("thaw", None)
    assert parse_function_arn(base + ":live") == ("thaw", "live")
    assert parse_function_arn(base + ":7") == ("thaw", "7")
    with pytest.raises(ValueError, match="not a Lambda function ARN"):
        parse_function_arn("arn:aws:s3:::bucket")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("on-demand", InitType.ON_DEMAND),
        ("provisioned-concurrency", InitType.PROVISIONED),
        ("snap-start", InitType.SNAP_START),
        (None, InitType.ON_DEMAND),
        ("", InitType.ON_DEMAND),
    ],
)
def test_init_type(value: str | None, expected: InitType) -> None:
    assert InitType.parse(value) is expected
    assert expected.loads_in_init is (expected is not InitType.ON_DEMAND)
