"""Job webhooks: an event POSTed, signed, to the URL a job gave, retried for a bounded time.

A job asks for events (`start`, `progress`, `completed`; `completed` by default) when it is
submitted (`subscribe` checks the URL: a 422 then rather than a silent failure later). The job
runner hands each change to `send`, from the event loop or an inference thread: `send` only
builds the body and queues it, so neither the loop nor the model ever waits for a receiver.

Deliveries run as asyncio tasks on the server's loop, one lane per job so a job's events arrive
in order (a newer progress event replaces one still waiting). Every attempt is bounded
(`THAW_WEBHOOK_TIMEOUT_S`: resolve, connect, send, answer); a failure worth retrying (no
connection, no answer, 408, 429, 5xx) is retried with exponential backoff and jitter, honouring
`Retry-After`, until `THAW_WEBHOOK_RETRY_S` is spent; any other answer ends the delivery. At most
`THAW_WEBHOOK_QUEUE_SIZE` deliveries wait in the process (more are dropped and logged), so a
slow receiver cannot hold memory without bound. At shutdown, pending deliveries get
`THAW_WEBHOOK_DRAIN_S`. Each delivery ends in exactly one log record saying how it went.

Deliveries live in this process's memory: a process that dies loses the ones not yet made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from runtime.jobs import transport
from runtime.jobs.destinations import (
    AllowList,
    Destination,
    Resolver,
    WebhookRefused,
    parse,
    system_resolve,
    vetted,
)
from runtime.jobs.signing import signed_headers
from runtime.jobs.store import Job
from runtime.settings import WebhookSettings

log = logging.getLogger("thaw.webhooks")

BACKOFF_MAX_S = 60.0
"""The longest wait between two attempts that backoff alone makes (`Retry-After` may ask more)."""

SUBMIT_RESOLVE_S = 2.0
"""How long a submission waits to learn its webhook host's addresses (no answer: accepted, and
every delivery attempt checks them again)."""

RETRY_STATUSES = frozenset({408, 429})
"""4xx answers that mean "later" rather than "no"; every 5xx is retried too."""


class JobEvent(StrEnum):
    """What a job's webhook can be told."""

    START = "start"
    """The job left the queue and began on the model."""

    PROGRESS = "progress"
    """A denoising step finished (at most one event per `THAW_WEBHOOK_PROGRESS_S` per job)."""

    COMPLETED = "completed"
    """The job ended: `data.status` says succeeded, failed or canceled."""

    @property
    def type(self) -> str:
        """The event's `type` in the body."""
        return {"start": "job.started", "progress": "job.progress"}.get(self, "job.completed")


DEFAULT_EVENTS = (JobEvent.COMPLETED,)


class Outcome(StrEnum):
    """How a delivery ended (the `outcome` of its log record)."""

    DELIVERED = "delivered"
    """A 2xx answer."""

    REJECTED = "rejected"
    """An answer not worth retrying (3xx, 4xx but 408 and 429)."""

    GAVE_UP = "gave_up"
    """Retryable failures until the retry budget was spent."""

    REFUSED = "refused"
    """The host resolved to an address webhooks may not go to."""

    DROPPED = "dropped"
    """Not queued: the process already holds `THAW_WEBHOOK_QUEUE_SIZE` deliveries."""

    ABANDONED = "abandoned"
    """Still pending when the shutdown's `THAW_WEBHOOK_DRAIN_S` ran out."""


@dataclass(frozen=True)
class Subscription:
    """What a job asked for: where, and which events. Kept in the job's request."""

    url: str
    events: tuple[JobEvent, ...]

    def as_request(self) -> dict[str, Any]:
        return {"webhook": self.url, "webhook_events": [event.value for event in self.events]}


@dataclass(frozen=True)
class Delivery:
    """One event for one webhook: its id stays the same across attempts."""

    webhook_id: str
    job_id: str
    event: JobEvent
    destination: Destination
    body: bytes


@dataclass
class Attempt:
    """How one attempt went; `retry` when another may succeed."""

    outcome: Outcome | None
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


def plain_view(job: Job) -> dict[str, Any]:
    record = job.to_json()
    record.pop("request_hash", None)
    return record


class WebhookSender:
    """Queues and delivers the webhooks of one process's jobs. `send` is thread-safe; the
    deliveries run on the event loop that `start` (or the first `send` made on a loop) binds."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        view: Callable[[Job], dict[str, Any]] = plain_view,
        resolve: Resolver = system_resolve,
        post: transport.Post = transport.post,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.allowed = AllowList(settings.hosts)
        self._view = view
        self._resolve = resolve
        self._post = post
        self._wall = wall
        self._monotonic = monotonic
        self._sleep = sleep
        self._jitter = jitter
        self._lock = threading.Lock()
        self._lanes: dict[str, deque[Delivery]] = {}
        self._pending = 0
        self._progress_at: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._driving: set[str] = set()  # lanes with a task (or one on its way)
        self._waiting: set[str] = set()  # lanes queued before a loop was bound
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending(self) -> int:
        """Deliveries queued or in flight."""
        with self._lock:
            return self._pending

    # -- submission ----------------------------------------------------------------------------

    async def subscribe(self, url: str | None, events: Sequence[str] | None) -> Subscription | None:
        """Check what a submission asks for; raises `WebhookRefused` (a 422) when thaw will not
        call that URL. Call on the event loop."""
        if url is None:
            if events is not None:
                raise WebhookRefused("webhook_events without a webhook", field="webhook_events")
            return None
        if not self.settings.enabled:
            raise WebhookRefused("webhooks are not enabled on this server")
        destination = parse(url, self.allowed)
        try:
            chosen = DEFAULT_EVENTS if events is None else tuple(map(JobEvent, events))
        except ValueError:
            allowed = ", ".join(event.value for event in JobEvent)
            raise WebhookRefused(f"webhook_events: use {allowed}", field="webhook_events") from None
        if not chosen:
            raise WebhookRefused(
                "webhook_events: ask for at least one event", field="webhook_events"
            )
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(SUBMIT_RESOLVE_S):
                await vetted(destination, self._resolve)
        return Subscription(url, tuple(dict.fromkeys(chosen)))

    # -- queueing (any thread) -----------------------------------------------------------------

    def send(self, job: Job, event: JobEvent) -> None:
        """Queue `event` for `job`'s webhook, if it has one that asked for this event. Never
        waits for the network."""
        url = job.request.get("webhook")
        if not url or event.value not in job.request.get("webhook_events", ()):
            return
        if not self._due(job.id, event):
            return
        try:
            destination = parse(url, self.allowed)
        except WebhookRefused as exc:  # the allow-list changed since the job was submitted
            fields = {"job_id": job.id, "event": event.value, "outcome": Outcome.REFUSED.value}
            log.warning("webhook failed", extra={**fields, "attempts": 0, "error": exc.message})
            return
        body = {"type": event.type, "timestamp": _iso(self._wall()), "data": self._view(job)}
        delivery = Delivery(
            f"msg_{uuid.uuid4().hex}",
            job.id,
            event,
            destination,
            json.dumps(body, separators=(",", ":")).encode(),
        )
        self._enqueue(delivery)

    def _due(self, job_id: str, event: JobEvent) -> bool:
        """Progress at most once per `progress_s` per job."""
        now = self._monotonic()
        with self._lock:
            if event is JobEvent.COMPLETED:
                self._progress_at.pop(job_id, None)
            elif event is JobEvent.PROGRESS:
                last = self._progress_at.get(job_id)
                if last is not None and now - last < self.settings.progress_s:
                    return False
                self._progress_at[job_id] = now
        return True

    def _enqueue(self, delivery: Delivery) -> None:
        with self._lock:
            lane = self._lanes.setdefault(delivery.job_id, deque())
            waiting = lane[-1] if len(lane) > 1 else None  # lane[0] may be on its way
            if delivery.event is JobEvent.PROGRESS and waiting and waiting.event is delivery.event:
                lane.pop()  # a progress event not yet sent: the newer one says more
                self._pending -= 1
            full = self._pending >= self.settings.queue_size
            if not full:
                lane.append(delivery)
                self._pending += 1
            elif not lane:
                del self._lanes[delivery.job_id]
            begin = not full and delivery.job_id not in self._driving
            if begin:
                self._driving.add(delivery.job_id)
        if full:
            self._record(delivery, Outcome.DROPPED, 0)
        elif begin:
            self._begin(delivery.job_id)

    def _begin(self, job_id: str) -> None:
        """Start the lane's task on the bound loop (from any thread)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            self._loop = running
            self._drive(job_id)
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # closed: the process is stopping
                loop.call_soon_threadsafe(self._drive, job_id)
                return
        with self._lock:
            self._waiting.add(job_id)

    def _drive(self, job_id: str) -> None:
        self._tasks[job_id] = asyncio.ensure_future(self._lane(job_id))

    # -- delivering (the event loop) -----------------------------------------------------------

    async def _lane(self, job_id: str) -> None:
        """Deliver a job's events one after the other until its lane is empty."""
        try:
            while True:
                with self._lock:
                    lane = self._lanes.get(job_id)
                    if not lane:
                        self._lanes.pop(job_id, None)
                        return
                    delivery = lane[0]
                try:
                    await self._deliver(delivery)
                finally:
                    with self._lock:
                        lane.popleft()
                        self._pending -= 1
        finally:
            with self._lock:
                self._driving.discard(job_id)
            if self._tasks.get(job_id) is asyncio.current_task():
                del self._tasks[job_id]

    async def _deliver(self, delivery: Delivery) -> None:
        started = self._monotonic()
        attempts = 0
        attempt = Attempt(None)
        try:
            while True:
                attempts += 1
                attempt = await self._attempt(delivery)
                if attempt.outcome is not None:
                    break
                wait = self._backoff(attempts, attempt.retry_after_s)
                if self._monotonic() - started + wait > self.settings.retry_s:
                    attempt.outcome = Outcome.GAVE_UP
                    break
                await self._sleep(wait)
        except asyncio.CancelledError:
            self._record(delivery, Outcome.ABANDONED, attempts, attempt, started)
            raise
        self._record(delivery, attempt.outcome, attempts, attempt, started)

    async def _attempt(self, delivery: Delivery) -> Attempt:
        headers = signed_headers(
            self.settings.keys, delivery.webhook_id, int(self._wall()), delivery.body
        )
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                addresses = await vetted(delivery.destination, self._resolve)
                answer = await self._post(delivery.destination, addresses, headers, delivery.body)
        except WebhookRefused as exc:
            return Attempt(Outcome.REFUSED, error=exc.message)
        except TimeoutError:
            return Attempt(None, error=f"no answer within {self.settings.timeout_s:g}s")
        except (OSError, EOFError) as exc:
            return Attempt(None, error=f"{type(exc).__name__}: {exc}"[:300])
        status = answer.status
        if 200 <= status < 300:
            return Attempt(Outcome.DELIVERED, status)
        if status >= 500 or status in RETRY_STATUSES:
            return Attempt(None, status, f"answered {status}", answer.retry_after_s)
        return Attempt(Outcome.REJECTED, status, f"answered {status}")

    def _backoff(self, attempts: int, retry_after_s: float | None) -> float:
        """Exponential from `backoff_s`, capped, jittered down to half (so receivers that
        failed together are not retried together); at least what `Retry-After` asked."""
        base = min(self.settings.backoff_s * 2.0 ** (attempts - 1), BACKOFF_MAX_S)
        wait = base * (0.5 + self._jitter() / 2)
        return max(wait, retry_after_s or 0.0)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the running loop and start the lanes queued before there was one (jobs
        settled while the app was being built). Call on the event loop."""
        self._loop = asyncio.get_running_loop()
        with self._lock:
            waiting, self._waiting = self._waiting, set()
        for job_id in waiting:
            self._drive(job_id)

    async def drain(self, timeout_s: float | None = None) -> int:
        """Let pending deliveries finish for at most `timeout_s` (default: the settings'
        `drain_s`), then abandon the rest, each logged. Returns how many were abandoned."""
        budget = self.settings.drain_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(budget):
                while tasks := [task for task in self._tasks.values() if not task.done()]:
                    await asyncio.wait(tasks)
            return 0
        except TimeoutError:
            pass
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with self._lock:
            left = [delivery for lane in self._lanes.values() for delivery in lane]
            self._lanes.clear()
            self._driving.clear()
            self._waiting.clear()
            self._pending = 0
        for delivery in left:
            self._record(delivery, Outcome.ABANDONED, 0)
        return len(tasks) + len(left)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Deliver while inside; drain (bounded) on the way out."""
        self.start()
        try:
            yield
        finally:
            await self.drain()

    # -- the record ----------------------------------------------------------------------------

    def _record(
        self,
        delivery: Delivery,
        outcome: Outcome,
        attempts: int,
        attempt: Attempt | None = None,
        started: float | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "job_id": delivery.job_id,
            "webhook_id": delivery.webhook_id,
            "event": delivery.event.value,
            "url": delivery.destination.shown,
            "outcome": outcome.value,
            "attempts": attempts,
            "status": attempt.status if attempt else None,
            "error": attempt.error if attempt else None,
        }
        if started is not None:
            fields["seconds"] = round(self._monotonic() - started, 3)
        if outcome is Outcome.DELIVERED:
            log.info("webhook delivered", extra=fields)
        elif outcome in (Outcome.DROPPED, Outcome.ABANDONED):
            log.warning(f"webhook {outcome.value}", extra=fields)
        else:
            log.warning("webhook failed", extra=fields)


def _iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
