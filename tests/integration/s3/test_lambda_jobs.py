"""Asynchronous jobs on Lambda: the real `awslambdaric` client against thaw's Runtime API
emulator, with moto's S3 server as the job store.

A function-URL submission answers 202 with `Location` at once: the invocation records the job in
S3 and calls Lambda's Invoke API with `InvocationType=Event` for its own function and alias. The
emulator serves that API too: it answers 202 and queues `{"thaw": "job", "id": ...}` for the same
environment, which claims the job, runs it and writes the image to S3. Polling is another
function-URL invocation; the image is a 307 to a presigned S3 URL. A job's webhooks are
delivered by its worker invocation before it ends (a frozen environment delivers nothing).
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_webhooks import SECRET, Receiver
from tests.support.lambda_emulator import FUNCTION_NAME, RuntimeApiEmulator
from tests.support.s3_server import S3Server

EVENTS = Path(__file__).resolve().parents[2] / "fixtures" / "events"
BUCKET = "lambda-jobs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = {"prompt": "a red fox in snow", "num_inference_steps": 2, "width": 64, "height": 64}
_prefixes = itertools.count()


def http_event(
    method: str, path: str, body: dict[str, Any] | None = None, **headers: str
) -> dict[str, Any]:
    """A function-URL (payload 2.0) event from the recorded one, for any method and path."""
    event: dict[str, Any] = json.loads((EVENTS / "function_url_generate.json").read_text())
    event["rawPath"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["headers"] = {**event["headers"], "accept": "application/json", **headers}
    if body is None:
        event.pop("body")
    else:
        event["body"] = json.dumps(body)
    return event


def call(emulator: RuntimeApiEmulator, event: dict[str, Any], timeout_ms: int = 60_000) -> Any:
    answer = emulator.invoke(event, timeout_ms=timeout_ms)
    assert answer.outcome == "response", answer.body
    return answer.result


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def function(
    tiny_model: Path, s3: S3Server, receiver: Receiver
) -> Iterator[tuple[RuntimeApiEmulator, str]]:
    """One on-demand environment whose Invoke API reaches itself, with jobs in S3."""
    s3.client().create_bucket(Bucket=BUCKET)
    prefix = f"jobs-{next(_prefixes)}"
    emulator = RuntimeApiEmulator()
    emulator.invoke_target = emulator
    emulator.start(
        {
            "THAW_TORCH_THREADS": "1",
            "THAW_MODEL": str(tiny_model),
            "THAW_JOBS_URL": f"s3://{BUCKET}/{prefix}",
            "THAW_WEBHOOK_HOSTS": "127.0.0.1",
            "THAW_WEBHOOK_SECRET": SECRET,
            **s3.env(),
        }
    )
    try:
        emulator.wait_init(150)
        yield emulator, prefix
    finally:
        emulator.close()


def test_a_submission_answers_202_at_once_and_the_job_runs_in_an_async_invocation(
    function: tuple[RuntimeApiEmulator, str], s3: S3Server
) -> None:
    emulator, prefix = function
    submitted = call(emulator, http_event("POST", "/jobs", {**QUICK, "seed": 11}))
    assert submitted["statusCode"] == 202
    job = json.loads(submitted["body"])
    assert submitted["headers"]["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued"
    # The submission did not run the job: it queued one asynchronous invoke of its own alias.
    assert emulator.invoke_kinds[-1] == "Event"
    assert emulator.invoke_requests[-1] == (FUNCTION_NAME, {"Qualifier": ["live"]})

    # The next event is the worker's; this poll runs after it, as Lambda would have by then.
    polled = call(emulator, http_event("GET", f"/jobs/{job['id']}"))
    assert polled["statusCode"] == 200
    done = json.loads(polled["body"])
    assert done["status"] == "succeeded", done
    assert done["result"]["seed"] == 11
    assert done["progress"]["step"] == done["progress"]["steps"] >= 2

    image = call(emulator, http_event("GET", f"/jobs/{job['id']}/image"))
    assert image["statusCode"] == 307
    location = image["headers"]["location"]
    assert location.startswith(f"{s3.endpoint}/{BUCKET}/{prefix}/{job['id']}/image.png?")
    png = httpx.get(location).content
    assert png.startswith(PNG_MAGIC)
    # The image a synchronous call for the same request gives.
    sync = call(
        emulator, http_event("POST", "/generate", {**QUICK, "seed": 11}, accept="image/png")
    )
    assert base64.b64decode(sync["body"]) == png


def test_prefer_respond_async_on_generate_is_a_job_too(
    function: tuple[RuntimeApiEmulator, str],
) -> None:
    emulator, _ = function
    event = http_event("POST", "/generate", QUICK, prefer="respond-async")
    submitted = call(emulator, event)
    assert submitted["statusCode"] == 202
    job_id = json.loads(submitted["body"])["id"]
    done = json.loads(call(emulator, http_event("GET", f"/jobs/{job_id}"))["body"])
    assert done["status"] == "succeeded"


def test_an_idempotent_put_dispatches_once_and_a_second_delivery_runs_nothing(
    function: tuple[RuntimeApiEmulator, str],
) -> None:
    emulator, _ = function
    events_before = emulator.invoke_kinds.count("Event")
    first = call(emulator, http_event("PUT", "/jobs/lambda-order-1", {**QUICK, "seed": 3}))
    again = call(emulator, http_event("PUT", "/jobs/lambda-order-1", {**QUICK, "seed": 3}))
    assert (first["statusCode"], again["statusCode"]) == (202, 200)
    assert emulator.invoke_kinds.count("Event") == events_before + 1
    done = json.loads(call(emulator, http_event("GET", "/jobs/lambda-order-1"))["body"])
    assert done["status"] == "succeeded"
    # Lambda may deliver an asynchronous event more than once: the claim is a conditional
    # write on the record, so a duplicate finds the job settled and runs nothing.
    duplicate = call(emulator, {"thaw": "job", "id": "lambda-order-1"})
    assert duplicate == {"job_id": "lambda-order-1", "ran": False, "reason": "already succeeded"}
    unknown = call(emulator, {"thaw": "job", "id": "never-submitted"})
    assert unknown["ran"] is False


def test_cancel_before_the_worker_claims_the_job_means_it_never_runs(
    function: tuple[RuntimeApiEmulator, str],
) -> None:
    emulator, _ = function
    served_before = json.loads(call(emulator, http_event("GET", "/health"))["body"])["served"]
    # Submit and cancel in one go: the environment serves the cancel's invocation before the
    # worker's, because the test queues it while the submission is still being answered.
    submitting = emulator.submit(http_event("PUT", "/jobs/lambda-cancel-1", QUICK))
    canceling = emulator.submit(http_event("DELETE", "/jobs/lambda-cancel-1"))
    assert submitting.wait(60).result["statusCode"] == 202
    assert json.loads(canceling.wait(60).result["body"])["status"] == "canceled"
    # This poll runs after the worker's invocation, which found the job settled.
    final = json.loads(call(emulator, http_event("GET", "/jobs/lambda-cancel-1"))["body"])
    assert final["status"] == "canceled"
    assert final["started_at"] is None
    health = json.loads(call(emulator, http_event("GET", "/health"))["body"])
    assert health["served"] == served_before  # nothing was generated


def test_the_worker_invocation_delivers_the_jobs_webhook_before_it_ends(
    function: tuple[RuntimeApiEmulator, str], receiver: Receiver
) -> None:
    emulator, _ = function
    hook = receiver.url("/ok/lambda")
    body = {**QUICK, "webhook": hook, "webhook_events": ["start", "completed"]}
    submitted = call(emulator, http_event("POST", "/jobs", body))
    assert submitted["statusCode"] == 202
    job_id = json.loads(submitted["body"])["id"]
    # The worker's invocation ends, and the environment freezes, only after its deliveries:
    # by the time the poll is answered, both events were received (and no later).
    call(emulator, http_event("GET", f"/jobs/{job_id}"))
    events = [item.verified() for item in receiver.at("/ok/lambda")]
    assert [event["type"] for event in events] == ["job.started", "job.completed"]
    assert events[-1]["data"]["id"] == job_id
    assert events[-1]["data"]["status"] == "succeeded"
