"""CloudWatch Embedded Metric Format lines: the document's shape, and what the Lambda adapter
reports for HTTP invocations, warm-up pings and the load."""

from __future__ import annotations

import io
import json
from typing import Any

from runtime.aws.adapter import LambdaAdapter
from runtime.aws.emf import MILLISECONDS, EmfWriter, Metric, server_timing
from runtime.aws.events import InitType
from runtime.aws.warmup import Warmer
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.settings import PreloadPolicy
from tests.support.fakes import CountingLoader
from tests.unit.aws.test_adapter import Context, event


def documents(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_an_emf_document_cloudwatch_accepts() -> None:
    writer = EmfWriter(namespace="thaw-test", stream=io.StringIO())
    line = writer.line(
        [Metric("Requests", 1), Metric("Latency", 12.5, MILLISECONDS)],
        properties={"request_id": "abc", "service": "ignored: a dimension wins"},
        timestamp_ms=1_700_000_000_000,
    )
    document = json.loads(line)
    assert document["_aws"] == {
        "Timestamp": 1_700_000_000_000,
        "CloudWatchMetrics": [
            {
                "Namespace": "thaw-test",
                "Dimensions": [["service"]],
                "Metrics": [
                    {"Name": "Requests", "Unit": "Count"},
                    {"Name": "Latency", "Unit": "Milliseconds"},
                ],
            }
        ],
    }
    # Every metric and dimension named in the directive is a top-level member with its value.
    assert document["Requests"] == 1
    assert document["Latency"] == 12.5
    assert document["service"] == "text-to-image"
    assert document["request_id"] == "abc"
    assert "\n" not in line


def test_server_timing_is_read_back_in_milliseconds() -> None:
    assert server_timing("queue;dur=1.5, inference;dur=250.0, encode;dur=2") == {
        "queue": 1.5,
        "inference": 250.0,
        "encode": 2.0,
    }
    assert server_timing(None) == {}
    assert server_timing("junk, x;dur=nan-ish, ;dur=3") == {}


class TimedHttp:
    """Stands in for Mangum with the headers the app sets."""

    def __init__(self, status: int) -> None:
        self.status = status

    def __call__(self, _event: dict[str, Any], _context: Any) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": {"server-timing": "queue;dur=3.0, inference;dur=120.5, encode;dur=1.0"},
            "body": "",
            "isBase64Encoded": False,
        }


def make(status: int = 200) -> tuple[LambdaAdapter, io.StringIO]:
    loader = CountingLoader()
    slot: ModelSlot[Any] = ModelSlot(
        "test", loader, release=loader.release, retry=RetryPolicy(attempts=1)
    )
    stream = io.StringIO()
    adapter = LambdaAdapter(
        slot,
        TimedHttp(status),
        Warmer(slot, "env-self", invoker_factory=lambda: None, hold_s=0.0),
        model_paths=("/generate",),
        metrics=EmfWriter(stream=stream),
    )
    return adapter, stream


def test_http_invocations_report_latency_queue_inference_and_the_cold_start() -> None:
    adapter, stream = make()
    adapter.init(InitType.ON_DEMAND, PreloadPolicy.BACKGROUND)
    context = Context()
    context.aws_request_id = "req-1"  # type: ignore[attr-defined]
    adapter(event("function_url_generate.json"), context)
    adapter(event("function_url_generate.json"), Context())
    lines = documents(stream)
    load, first, second = lines
    assert load["LoadTime"] >= 0
    assert {m["Name"] for m in load["_aws"]["CloudWatchMetrics"][0]["Metrics"]} >= {"LoadTime"}
    assert first["Requests"] == 1
    assert first["ColdStartRequests"] == 1
    assert second["ColdStartRequests"] == 0
    assert first["QueueTime"] == 3.0
    assert first["InferenceTime"] == 120.5
    assert first["Latency"] >= 0
    assert first["status"] == 200
    assert first["request_id"] == "req-1"
    assert first["path"] == "/generate"
    assert first["ServerErrors"] == 0
    assert first["Refused"] == 0


def test_refusals_and_server_errors_are_counted_apart() -> None:
    for status, refused, errors in ((429, 1, 0), (503, 1, 0), (504, 0, 1), (500, 0, 1)):
        adapter, stream = make(status)
        adapter.init(InitType.ON_DEMAND, PreloadPolicy.LAZY)
        adapter(event("function_url_health.json"), Context())
        (line,) = documents(stream)  # no load yet: no load line
        assert (line["Refused"], line["ServerErrors"]) == (refused, errors), status


def test_a_warmup_ping_reports_itself_and_never_an_http_request() -> None:
    adapter, stream = make()
    adapter.init(InitType.PROVISIONED, PreloadPolicy.BACKGROUND)
    adapter(event("eventbridge_scheduled.json"), Context())
    load, ping = documents(stream)
    assert "LoadTime" in load
    assert ping["WarmupPings"] == 1
    assert ping["ColdStartWarmups"] == 1
    assert ping["warm"] is True
    assert "Requests" not in ping
