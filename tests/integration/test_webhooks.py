"""Webhooks over real HTTP: a thaw server (uvicorn, the tiny model) posts its job events to a
receiver this test runs on loopback (`http.server` in a thread), and every signature is checked
with `standardwebhooks`, an independent implementation of the Standard Webhooks specification.

Covered: the default `completed` event, `start` and `progress` too, retries with backoff on
5xx, no retry on another 4xx, URLs refused at submission (a host not in the allow-list,
link-local even when listed, not http(s)), a receiver that never answers (the job is not
delayed), and a shutdown that gives pending deliveries a bounded time.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.support.server import ServerProcess

QUICK = {"prompt": "a lighthouse", "num_inference_steps": 2, "width": 64, "height": 64, "seed": 5}
SECRET = "whsec_" + base64.b64encode(b"thaw-webhook-test-secret-32-bytes!").decode()
VERIFIER = Webhook(SECRET)
BACKOFF_S = 0.2
TIMEOUT_S = 5.0  # one attempt's bound in the test server
HANG_S = 30.0  # how long the hanging receiver holds a request at most


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def verified(self) -> dict[str, Any]:
        """The event, once its signature checks out (raises otherwise)."""
        event: dict[str, Any] = VERIFIER.verify(self.body, self.headers)
        return event


class Receiver:
    """An HTTP server on loopback that records every POST and answers by its path:
    `/ok/...` 204; `/status/<code>/...` that code; `/flaky/<n>/...` 503 for the first n
    requests to that path, then 204; `/hang/...` never answers (holds the request at most
    `HANG_S`, or until the receiver stops)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.changed = threading.Condition()
        self.closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.changed:
                    receiver.received.append(
                        Received(self.path, dict(self.headers), body, time.monotonic())
                    )
                    seen = sum(1 for item in receiver.received if item.path == self.path)
                    receiver.changed.notify_all()
                parts = self.path.strip("/").split("/")
                if parts[0] == "hang":
                    receiver.closing.wait(HANG_S)
                    return
                status = 204
                if parts[0] == "status":
                    status = int(parts[1])
                elif parts[0] == "flaky" and seen <= int(parts[1]):
                    status = 503
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.changed:
            return [item for item in self.received if item.path == path]

    def wait(self, path: str, count: int, timeout: float = 60) -> list[Received]:
        """The first `count` requests to `path`, waiting for them at most `timeout`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [item for item in self.received if item.path == path]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path}: {len(found)} of {count} requests came")
                self.changed.wait(left)

    def wait_type(self, path: str, kind: str, timeout: float = 60) -> list[Received]:
        """Every request to `path` up to and including the first event of type `kind`."""
        deadline = time.monotonic() + timeout
        count = 1
        while True:
            found = self.wait(path, count, max(0.0, deadline - time.monotonic()))
            if json.loads(found[-1].body)["type"] == kind:
                return found
            count += 1

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def wait_job(server: ServerProcess, job_id: str, *statuses: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return dict(job)
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never became {statuses}: {job}")


def log_records(server: ServerProcess, message: str) -> list[dict[str, Any]]:
    records = []
    for line in server.log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("msg") == message:
                records.append(record)
    return records


def wait_log(server: ServerProcess, message: str, timeout: float = 30, **fields: Any) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in log_records(server, message):
            if all(record.get(key) == value for key, value in fields.items()):
                return record
        time.sleep(0.05)
    raise AssertionError(f"no log record {message!r} with {fields}:\n{server.log[-3000:]}")


def webhook_env(tiny_model: Path, jobs: Path, **extra: str) -> dict[str, str]:
    return {
        "THAW_MODEL": str(tiny_model),
        "THAW_JOBS_DIR": str(jobs),
        # 169.254.169.254 is listed on purpose: link-local is refused even when listed.
        "THAW_WEBHOOK_HOSTS": "127.0.0.1,169.254.169.254",
        "THAW_WEBHOOK_SECRET": SECRET,
        "THAW_WEBHOOK_BACKOFF_S": str(BACKOFF_S),
        "THAW_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
        "THAW_WEBHOOK_RETRY_S": "10",
        "THAW_WEBHOOK_DRAIN_S": "2",
        "THAW_WEBHOOK_PROGRESS_S": "0.02",
        **extra,
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(webhook_env(tiny_model, tmp_path_factory.mktemp("jobs"))).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_a_finished_job_posts_one_signed_completed_event(
    server: ServerProcess, receiver: Receiver
) -> None:
    path = "/ok/completed"
    accepted = server.post("/jobs", json={**QUICK, "webhook": receiver.url(path)})
    assert accepted.status_code == 202
    job = accepted.json()
    assert job["request"]["webhook"] == receiver.url(path)
    assert job["request"]["webhook_events"] == ["completed"]
    [delivery] = receiver.wait(path, 1)
    event = delivery.verified()
    assert event["type"] == "job.completed"
    assert event["data"]["id"] == job["id"]
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["links"]["image"] == f"/jobs/{job['id']}/image"
    assert event["data"] == server.get(f"/jobs/{job['id']}").json()
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["webhook-id"].startswith("msg_")
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 60
    assert delivery.headers["webhook-signature"].startswith("v1,")
    record = wait_log(server, "webhook delivered", webhook_id=delivery.headers["webhook-id"])
    assert (record["job_id"], record["event"], record["status"]) == (job["id"], "completed", 204)
    assert record["attempts"] == 1
    time.sleep(0.3)
    assert len(receiver.at(path)) == 1  # only what was asked for: no start, no progress


def test_start_and_progress_events_come_in_order_before_completed(
    server: ServerProcess, receiver: Receiver
) -> None:
    path = "/ok/all-events"
    accepted = server.post(
        "/generate",
        json={
            **QUICK,
            "num_inference_steps": 12,
            "webhook": receiver.url(path),
            "webhook_events": ["start", "progress", "completed"],
        },
        headers={"Prefer": "respond-async"},
    )
    assert accepted.status_code == 202
    deliveries = receiver.wait_type(path, "job.completed")
    events = [delivery.verified() for delivery in deliveries]
    types = [event["type"] for event in events]
    assert types[0] == "job.started"
    assert types[-1] == "job.completed"
    assert set(types[1:-1]) == {"job.progress"}
    assert len(types) >= 3
    steps = [
        event["data"]["progress"]["step"] for event in events if event["type"] == "job.progress"
    ]
    assert steps == sorted(steps)
    assert events[0]["data"]["status"] == "running"
    assert events[-1]["data"]["status"] == "succeeded"
    assert len({delivery.headers["webhook-id"] for delivery in deliveries}) == len(deliveries)


def test_a_failing_receiver_is_retried_with_backoff_and_a_4xx_is_not(
    server: ServerProcess, receiver: Receiver
) -> None:
    flaky = "/flaky/2/retried"
    job = server.post("/jobs", json={**QUICK, "webhook": receiver.url(flaky)}).json()
    attempts = receiver.wait(flaky, 3)
    assert len({attempt.headers["webhook-id"] for attempt in attempts}) == 1  # one message
    for attempt in attempts:
        assert attempt.verified()["data"]["id"] == job["id"]  # each attempt signed anew
    first_gap = attempts[1].at - attempts[0].at
    second_gap = attempts[2].at - attempts[1].at
    assert first_gap >= BACKOFF_S / 2 * 0.9  # the backoff is jittered down to half at most
    assert second_gap >= BACKOFF_S * 0.9  # and it doubles
    record = wait_log(server, "webhook delivered", job_id=job["id"])
    assert (record["attempts"], record["status"], record["outcome"]) == (3, 204, "delivered")

    refused = "/status/400/not-retried"
    other = server.post("/jobs", json={**QUICK, "webhook": receiver.url(refused)}).json()
    record = wait_log(server, "webhook failed", job_id=other["id"])
    assert (record["attempts"], record["status"], record["outcome"]) == (1, 400, "rejected")
    time.sleep(BACKOFF_S * 4)
    assert len(receiver.at(refused)) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"webhook": "http://localhost:9/hook"}, "not in the allowed hosts"),
        ({"webhook": "http://169.254.169.254/latest/meta-data/"}, "link-local"),
        ({"webhook": "http://[fe80::1]:8080/hook"}, "link-local"),
        ({"webhook": "ftp://127.0.0.1/hook"}, "http or https"),
        ({"webhook": "http://user:pw@127.0.0.1/hook"}, "credentials"),
        ({"webhook": "http://127.0.0.1:9/h", "webhook_events": []}, "at least one"),
        ({"webhook": "http://127.0.0.1:9/h", "webhook_events": ["finished"]}, "webhook_events"),
        ({"webhook_events": ["start"]}, "without a webhook"),
    ],
)
def test_a_webhook_that_may_not_be_called_is_a_422_at_submission(
    server: ServerProcess, body: dict[str, Any], says: str
) -> None:
    for method, path, headers in (
        ("POST", "/jobs", {}),
        ("PUT", "/jobs/refused-hook", {}),
        ("POST", "/generate", {"Prefer": "respond-async"}),
    ):
        answer = server.client.request(method, path, json={**QUICK, **body}, headers=headers)
        assert answer.status_code == 422, (method, path, answer.text)
        assert says in answer.json()["error"]["message"]
    assert server.get("/jobs/refused-hook").status_code == 404  # nothing was accepted


def test_an_idempotent_put_repeats_its_webhook_too(
    server: ServerProcess, receiver: Receiver
) -> None:
    body = {**QUICK, "webhook": receiver.url("/ok/put")}
    first = server.client.put("/jobs/hooked-put", json=body)
    assert first.status_code == 202
    assert server.client.put("/jobs/hooked-put", json=body).status_code == 200
    other = {**body, "webhook": receiver.url("/ok/put-elsewhere")}
    assert server.client.put("/jobs/hooked-put", json=other).status_code == 409
    [delivery] = receiver.wait("/ok/put", 1)
    assert delivery.verified()["data"]["id"] == "hooked-put"
    time.sleep(0.3)
    assert len(receiver.at("/ok/put")) == 1  # one job, one event
    assert receiver.at("/ok/put-elsewhere") == []


def test_a_synchronous_generate_refuses_a_webhook(
    server: ServerProcess, receiver: Receiver
) -> None:
    answer = server.post("/generate", json={**QUICK, "webhook": receiver.url("/ok/sync")})
    assert answer.status_code == 422
    assert "respond-async" in answer.json()["error"]["message"]


def test_a_receiver_that_never_answers_does_not_delay_the_job(
    server: ServerProcess, receiver: Receiver
) -> None:
    path = "/hang/start"
    started = time.monotonic()
    job = server.post(
        "/jobs",
        json={**QUICK, "webhook": receiver.url(path), "webhook_events": ["start", "completed"]},
    ).json()
    plain = server.post("/jobs", json=QUICK).json()
    done = wait_job(server, job["id"], "succeeded", timeout=60)
    took = time.monotonic() - started
    wait_job(server, plain["id"], "succeeded", timeout=60)
    [hanging] = receiver.wait(path, 1)
    assert hanging.verified()["type"] == "job.started"
    # The job and the one behind it finished while the start event was still unanswered: well
    # before one attempt's timeout, let alone the retries.
    assert took < TIMEOUT_S, took
    assert done["status"] == "succeeded"
    assert len(receiver.at(path)) == 1


def test_a_stopping_server_gives_pending_deliveries_a_bounded_time(
    tiny_model: Path, tmp_path: Path, receiver: Receiver
) -> None:
    server = ServerProcess(
        webhook_env(tiny_model, tmp_path, THAW_WEBHOOK_DRAIN_S="1", THAW_WEBHOOK_RETRY_S="60")
    ).start()
    try:
        server.wait_ready()
        delivered = server.post("/jobs", json={**QUICK, "webhook": receiver.url("/ok/drain")})
        hanging = server.post("/jobs", json={**QUICK, "webhook": receiver.url("/hang/drain")})
        wait_job(server, hanging.json()["id"], "succeeded")
        receiver.wait("/hang/drain", 1)
        receiver.wait("/ok/drain", 1)
        stopping = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0
        took = time.monotonic() - stopping
    finally:
        server.stop()
    assert took < 1 + TIMEOUT_S, took  # the drain's second, not the hanging attempt's timeout
    record = wait_log(server, "webhook abandoned", job_id=hanging.json()["id"])
    assert record["outcome"] == "abandoned"
    assert record["attempts"] == 1
    assert wait_log(server, "webhook delivered", job_id=delivered.json()["id"])


def test_the_secret_is_never_logged(server: ServerProcess) -> None:
    assert SECRET.removeprefix("whsec_") not in server.log
    assert os.environ.get("THAW_WEBHOOK_SECRET") is None  # the test passed it to the child only
