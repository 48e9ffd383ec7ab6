"""The webhook sender with a fake receiver and a fake clock: which events go out, in what order,
signed how, retried when, dropped when full, throttled, and drained at shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook

from runtime.jobs.destinations import Destination, WebhookRefused
from runtime.jobs.store import Job, JobStatus
from runtime.jobs.transport import Answer, retry_after
from runtime.jobs.webhooks import JobEvent, Subscription, WebhookSender
from runtime.settings import WebhookSettings

KEY = b"k" * 32
SECRET = "whsec_" + base64.b64encode(KEY).decode()


class FakeClock:
    """Wall and monotonic time that move only when the sender sleeps (or a test says)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class FakeReceiver:
    """Answers each POST with the next of `answers` (an `Answer`, or an exception to raise),
    then 204; records what came."""

    answers: list[Answer | Exception] = field(default_factory=list)
    posts: list[tuple[Destination, list[str], dict[str, str], bytes]] = field(default_factory=list)
    hold: asyncio.Event | None = None

    async def __call__(
        self,
        destination: Destination,
        addresses: Sequence[str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Answer:
        self.posts.append((destination, list(addresses), dict(headers), body))
        if self.hold is not None:
            await self.hold.wait()
        answer = self.answers.pop(0) if self.answers else Answer(204)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for *_, body in self.posts]


async def resolve_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def sender(
    receiver: FakeReceiver,
    clock: FakeClock,
    resolve: Any = resolve_loopback,
    jitter: Any = lambda: 1.0,  # no jitter: the backoff is exactly base * 2**n
    **overrides: Any,
) -> WebhookSender:
    settings = WebhookSettings(
        **{
            "hosts": ("127.0.0.1", "hooks.example.com"),
            "keys": (KEY,),
            "backoff_s": 1.0,
            "retry_s": 30.0,
            "progress_s": 1.0,
            **overrides,
        }
    )
    return WebhookSender(
        settings,
        resolve=resolve,
        post=receiver,
        wall=clock.wall,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        jitter=jitter,
    )


def job(job_id: str = "j1", *, events: Sequence[str] = ("completed",), **fields: Any) -> Job:
    request = {"prompt": "p", "webhook": "http://127.0.0.1:9/hook", "webhook_events": list(events)}
    return Job(id=job_id, request=request, request_hash="h", created_at=0, expires_at=1, **fields)


async def settle(webhooks: WebhookSender) -> None:
    """Let every lane run to its end."""
    for _ in range(1000):
        if not webhooks.pending:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{webhooks.pending} deliveries still pending")


def test_an_event_is_posted_signed_with_the_job_as_data() -> None:
    receiver, clock = FakeReceiver(), FakeClock()
    clock.now = float(int(time.time()))  # the verifier refuses a timestamp minutes away

    async def scenario() -> None:
        webhooks = sender(receiver, clock)
        webhooks.start()
        webhooks.send(job(status=JobStatus.SUCCEEDED), JobEvent.COMPLETED)
        await settle(webhooks)

    asyncio.run(scenario())
    [(destination, addresses, headers, body)] = receiver.posts
    assert (destination.host, destination.port, addresses) == ("127.0.0.1", 9, ["127.0.0.1"])
    assert headers["webhook-timestamp"] == str(int(clock.now))
    event = Webhook(SECRET).verify(body, headers)
    assert event["type"] == "job.completed"
    assert event["timestamp"] == datetime.fromtimestamp(clock.now, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    assert event["data"]["id"] == "j1"
    assert event["data"]["status"] == "succeeded"
    assert "request_hash" not in event["data"]


def test_only_the_events_asked_for_go_out() -> None:
    receiver, clock = FakeReceiver(), FakeClock()

    async def scenario() -> None:
        webhooks = sender(receiver, clock)
        webhooks.send(job(), JobEvent.START)
        webhooks.send(job(), JobEvent.PROGRESS)
        webhooks.send(job(status=JobStatus.FAILED), JobEvent.COMPLETED)
        plain = job("j2")
        plain.request = {"prompt": "no webhook"}
        webhooks.send(plain, JobEvent.COMPLETED)
        await settle(webhooks)

    asyncio.run(scenario())
    assert [event["type"] for event in receiver.events()] == ["job.completed"]


def test_failures_worth_retrying_are_retried_with_doubling_waits() -> None:
    receiver = FakeReceiver(
        [Answer(503), ConnectionResetError("reset"), TimeoutError(), Answer(502)]
    )
    clock = FakeClock()

    async def scenario() -> None:
        webhooks = sender(receiver, clock)
        webhooks.send(job(), JobEvent.COMPLETED)
        await settle(webhooks)

    asyncio.run(scenario())
    assert len(receiver.posts) == 5
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert len({headers["webhook-id"] for _, _, headers, _ in receiver.posts}) == 1
    stamps = [int(headers["webhook-timestamp"]) for _, _, headers, _ in receiver.posts]
    assert stamps == sorted(stamps)
    assert stamps[-1] > stamps[0]  # each attempt signed with its own time


def test_retry_after_is_honoured_and_jitter_only_shortens(caplog: pytest.LogCaptureFixture) -> None:
    receiver, clock = FakeReceiver([Answer(429, retry_after_s=7.0), Answer(503)]), FakeClock()

    async def scenario() -> None:
        webhooks = sender(receiver, clock, jitter=lambda: 0.0)  # the shortest wait: half
        webhooks.send(job(), JobEvent.COMPLETED)
        await settle(webhooks)

    asyncio.run(scenario())
    assert clock.sleeps == [7.0, 1.0]  # Retry-After, then 2 s halved
    assert retry_after("120") == 120.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("soon") is None


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
def test_other_answers_are_not_retried(status: int, caplog: pytest.LogCaptureFixture) -> None:
    receiver, clock = FakeReceiver([Answer(status)]), FakeClock()
    caplog.set_level(logging.INFO, "thaw.webhooks")

    async def scenario() -> None:
        webhooks = sender(receiver, clock)
        webhooks.send(job(), JobEvent.COMPLETED)
        await settle(webhooks)

    asyncio.run(scenario())
    assert len(receiver.posts) == 1
    [record] = [r for r in caplog.records if r.name == "thaw.webhooks"]
    assert record.getMessage() == "webhook failed"
    assert (record.outcome, record.status, record.attempts) == ("rejected", status, 1)  # type: ignore[attr-defined]


def test_retries_stop_when_the_budget_is_spent(caplog: pytest.LogCaptureFixture) -> None:
    receiver, clock = FakeReceiver([Answer(500)] * 100), FakeClock()

    async def scenario() -> None:
        webhooks = sender(receiver, clock, retry_s=10.0)
        webhooks.send(job(), JobEvent.COMPLETED)
        await settle(webhooks)

    asyncio.run(scenario())
    assert clock.sleeps == [1.0, 2.0, 4.0]  # the next (8 s) would end past 10 s
    [record] = [r for r in caplog.records if r.name == "thaw.webhooks"]
    assert (record.outcome, record.attempts, record.status) == ("gave_up", 4, 500)  # type: ignore[attr-defined]
    assert record.url == "http://127.0.0.1:9/hook"  # type: ignore[attr-defined]


def test_a_host_that_now_resolves_to_link_local_is_refused_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver, clock = FakeReceiver(), FakeClock()

    async def rebound(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    async def scenario() -> None:
        webhooks = sender(receiver, clock, resolve=rebound)
        item = job()
        item.request["webhook"] = "http://hooks.example.com/in"
        webhooks.send(item, JobEvent.COMPLETED)
        await settle(webhooks)

    asyncio.run(scenario())
    assert receiver.posts == []
    [record] = [r for r in caplog.records if r.name == "thaw.webhooks"]
    assert (record.outcome, record.attempts) == ("refused", 1)  # type: ignore[attr-defined]
    assert "169.254.169.254" in record.error  # type: ignore[attr-defined]


def test_progress_is_throttled_and_a_waiting_one_replaced_by_the_newer() -> None:
    receiver, clock = FakeReceiver(hold=asyncio.Event()), FakeClock()
    events = ("start", "progress", "completed")

    async def scenario() -> None:
        webhooks = sender(receiver, clock)
        assert receiver.hold is not None
        webhooks.send(job(events=events, status=JobStatus.RUNNING), JobEvent.START)
        await asyncio.sleep(0)  # the start event is on its way, held by the receiver
        for step in range(1, 6):
            webhooks.send(job(events=events, step=step), JobEvent.PROGRESS)  # same second: 1
        for step in range(6, 9):
            clock.now += 1.0
            webhooks.send(job(events=events, step=step), JobEvent.PROGRESS)  # 6, 7, 8 queue
        webhooks.send(job(events=events, status=JobStatus.SUCCEEDED), JobEvent.COMPLETED)
        assert webhooks.pending == 3  # start (in flight), progress 8 (replaced 1, 6, 7), completed
        receiver.hold.set()
        await settle(webhooks)

    asyncio.run(scenario())
    sent = receiver.events()
    assert [event["type"] for event in sent] == ["job.started", "job.progress", "job.completed"]
    assert sent[1]["data"]["step"] == 8


def test_a_full_queue_drops_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    receiver, clock = FakeReceiver(hold=asyncio.Event()), FakeClock()

    async def scenario() -> None:
        webhooks = sender(receiver, clock, queue_size=2)
        assert receiver.hold is not None
        for number in range(4):
            webhooks.send(job(f"j{number}"), JobEvent.COMPLETED)
        assert webhooks.pending == 2
        receiver.hold.set()
        await settle(webhooks)

    asyncio.run(scenario())
    assert len(receiver.posts) == 2
    dropped = [r for r in caplog.records if r.getMessage() == "webhook dropped"]
    assert [r.job_id for r in dropped] == ["j2", "j3"]  # type: ignore[attr-defined]


def test_events_from_another_thread_are_delivered_on_the_loop() -> None:
    receiver, clock = FakeReceiver(), FakeClock()

    async def scenario() -> None:
        webhooks = sender(receiver, clock)
        webhooks.start()
        worker = threading.Thread(target=webhooks.send, args=(job(), JobEvent.COMPLETED))
        worker.start()
        worker.join(5)
        for _ in range(100):
            if receiver.posts:
                break
            await asyncio.sleep(0.01)
        await settle(webhooks)

    asyncio.run(scenario())
    assert len(receiver.posts) == 1


def test_events_queued_before_the_loop_start_with_it() -> None:
    receiver, clock = FakeReceiver(), FakeClock()
    webhooks = sender(receiver, clock)
    webhooks.send(job(), JobEvent.COMPLETED)  # no loop yet (a job settled at start)
    assert webhooks.pending == 1

    async def scenario() -> None:
        async with webhooks.running():
            await settle(webhooks)

    asyncio.run(scenario())
    assert len(receiver.posts) == 1


def test_a_drain_waits_a_bounded_time_then_abandons_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver, clock = FakeReceiver(hold=asyncio.Event()), FakeClock()

    async def scenario() -> float:
        webhooks = sender(receiver, clock)
        webhooks.send(job("j1", events=("start", "completed")), JobEvent.START)
        webhooks.send(job("j1", events=("start", "completed")), JobEvent.COMPLETED)
        webhooks.send(job("j2"), JobEvent.COMPLETED)
        await asyncio.sleep(0)
        started = time.monotonic()
        abandoned = await webhooks.drain(0.2)
        assert abandoned == 3
        assert webhooks.pending == 0
        return time.monotonic() - started

    took = asyncio.run(scenario())
    assert took < 2
    records = [r for r in caplog.records if r.getMessage() == "webhook abandoned"]
    assert sorted((r.job_id, r.event, r.attempts) for r in records) == [  # type: ignore[attr-defined]
        ("j1", "completed", 0),
        ("j1", "start", 1),
        ("j2", "completed", 1),
    ]


def test_subscribe_checks_what_a_submission_asks_for() -> None:
    receiver, clock = FakeReceiver(), FakeClock()

    async def scenario() -> None:
        webhooks = sender(receiver, clock)
        assert await webhooks.subscribe(None, None) is None
        chosen = await webhooks.subscribe("http://127.0.0.1:9/h", None)
        assert chosen == Subscription("http://127.0.0.1:9/h", (JobEvent.COMPLETED,))
        both = await webhooks.subscribe("http://127.0.0.1:9/h", ["start", "completed", "start"])
        assert both is not None
        assert both.as_request()["webhook_events"] == ["start", "completed"]
        for url, events, says in [
            (None, ["start"], "without a webhook"),
            ("http://127.0.0.1:9/h", [], "at least one"),
            ("http://127.0.0.1:9/h", ["done"], "use start, progress, completed"),
            ("http://elsewhere.example/", None, "not in the allowed hosts"),
        ]:
            with pytest.raises(WebhookRefused, match=says):
                await webhooks.subscribe(url, events)

        async def metadata(host: str, port: int) -> list[str]:
            return ["169.254.169.254"]

        webhooks.deliverer.resolve = metadata
        with pytest.raises(WebhookRefused, match="link-local"):
            await webhooks.subscribe("http://hooks.example.com/", None)

        async def unknown(host: str, port: int) -> list[str]:
            raise OSError("no such host")

        webhooks.deliverer.resolve = unknown  # not resolvable now: accepted, checked at delivery
        assert await webhooks.subscribe("http://hooks.example.com/", None) is not None
        off = WebhookSender(WebhookSettings())
        with pytest.raises(WebhookRefused, match="not enabled"):
            await off.subscribe("http://127.0.0.1/", None)

    asyncio.run(scenario())
