"""A job handed to an asynchronous self-invocation: the event it carries, the Invoke API call
(botocore's Stubber), and the adapter's routing of the worker's event."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from runtime.aws.adapter import LambdaAdapter
from runtime.aws.dispatch import DispatchError, SelfInvoker
from runtime.aws.events import EventKind, classify, job_event, prefers_async
from runtime.aws.warmup import Warmer
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.lifecycle.states import SlotState
from tests.support.fakes import CountingLoader
from tests.unit.aws.test_adapter import ARN, EVENTS, Context, RecordingHttp


def lambda_client() -> Any:
    return boto3.client(
        "lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def test_a_job_event_names_its_job_and_nothing_else_is_one() -> None:
    classified = classify(job_event("abc"))
    assert (classified.kind, classified.job_id) == (EventKind.JOB, "abc")
    assert classify({"thaw": "job"}).kind is EventKind.UNSUPPORTED
    assert classify({"thaw": "job", "id": 7}).kind is EventKind.UNSUPPORTED
    assert classify({"thaw": "warmup"}).kind is EventKind.WARMUP
    assert len(json.dumps(job_event("x" * 128))) < 256 * 1024  # an Event payload's limit


def test_dispatch_invokes_the_serving_function_and_alias_asynchronously() -> None:
    client = lambda_client()
    invoker = SelfInvoker(client_factory=lambda: client)
    invoker.serving(ARN)
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 202},
            {
                "FunctionName": "thaw",
                "Qualifier": "live",
                "InvocationType": "Event",
                "Payload": json.dumps({"thaw": "job", "id": "job-1"}).encode(),
            },
        )
        invoker.dispatch("job-1")
        stub.assert_no_pending_responses()


def test_dispatch_fails_loudly_without_a_target_or_when_lambda_refuses() -> None:
    client = lambda_client()
    invoker = SelfInvoker(client_factory=lambda: client)
    invoker.serving(None)
    with pytest.raises(DispatchError, match="no invoked function ARN"):
        invoker.dispatch("job-1")
    invoker.serving("arn:aws:lambda:us-east-1:123456789012:function:thaw")
    with Stubber(client) as stub:
        stub.add_client_error("invoke", "TooManyRequestsException", http_status_code=429)
        with pytest.raises(Exception, match="TooManyRequests"):
            invoker.dispatch("job-1")
        stub.add_response("invoke", {"StatusCode": 200})
        with pytest.raises(DispatchError, match="200"):
            invoker.dispatch("job-1")


def make(
    loader: CountingLoader, runs: list[tuple[str, float, SlotState]], *, max_wait_s: float = 0.1
) -> LambdaAdapter:
    slot: ModelSlot[Any] = ModelSlot(
        "test", loader, release=loader.release, retry=RetryPolicy(attempts=1, cooldown_s=60)
    )

    def run(job_id: str, budget_s: float) -> dict[str, Any]:
        runs.append((job_id, budget_s, slot.state))
        return {"job_id": job_id, "ran": True, "status": "succeeded"}

    return LambdaAdapter(
        slot,
        RecordingHttp(slot),
        Warmer(slot, "env-self", hold_s=0.0),
        margin_s=0.5,
        max_wait_s=max_wait_s,  # a client's wait: a worker's is not capped by it
        model_paths=("/generate",),
        jobs=run,
        dispatcher=SelfInvoker(client_factory=lambda: None),  # type: ignore[arg-type,return-value]
    )


def test_the_worker_event_waits_for_the_model_with_all_its_time_then_runs_the_job() -> None:
    gate = threading.Event()
    runs: list[tuple[str, float, SlotState]] = []
    adapter = make(CountingLoader(gate=gate), runs)
    adapter.slot.start()
    threading.Timer(0.3, gate.set).start()
    started = time.monotonic()
    report = adapter(job_event("job-9"), Context(remaining_ms=10_000))
    assert report == {"job_id": "job-9", "ran": True, "status": "succeeded"}
    assert time.monotonic() - started >= 0.25  # past max_wait_s: nobody waits on a worker
    [(job_id, budget_s, state)] = runs
    assert (job_id, state) == ("job-9", SlotState.READY)
    assert 8.5 < budget_s < 9.5  # 10 s less the margin less the wait
    assert adapter.dispatcher is not None
    assert adapter.dispatcher.target is not None
    assert adapter.dispatcher.target.qualifier == "live"  # a job accepted now runs on `live`


def test_without_a_job_runner_a_job_event_is_a_clear_error() -> None:
    slot: ModelSlot[Any] = ModelSlot("test", CountingLoader())
    adapter = LambdaAdapter(
        slot, RecordingHttp(slot), Warmer(slot, "env"), model_paths=("/generate",)
    )
    answer = adapter(job_event("job-1"), Context())
    assert answer["error"]["code"] == "unsupported_event"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"prefer": "respond-async"}, True),
        ({"Prefer": "wait=10, respond-async"}, True),
        ({"prefer": "respond-async; wait=5"}, True),
        ({"prefer": "return=minimal"}, False),
        ({}, False),
    ],
)
def test_prefer_respond_async_is_read_from_any_event_source(
    headers: dict[str, str], expected: bool
) -> None:
    assert prefers_async({"headers": headers}) is expected
    multi = {"multiValueHeaders": {name: [value] for name, value in headers.items()}}
    assert prefers_async(multi) is expected


def test_an_async_generate_does_not_wait_for_the_model() -> None:
    gate = threading.Event()
    adapter = make(CountingLoader(gate=gate), [], max_wait_s=30)
    adapter.slot.start()
    event: dict[str, Any] = json.loads((EVENTS / "function_url_generate.json").read_text())
    event["headers"]["prefer"] = "respond-async"
    started = time.monotonic()
    adapter(event, Context(remaining_ms=60_000))
    waited = time.monotonic() - started
    gate.set()
    assert waited < 5  # a synchronous /generate would wait up to 30 s for the gate
