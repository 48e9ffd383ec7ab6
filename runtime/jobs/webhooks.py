"""Job webhooks: an event POSTed, signed, to the URL a job gave, retried for a bounded time.

A job asks for events (`start`, `progress`, `completed`; `completed` by default) when it is
submitted (`subscribe` checks the URL: a 422 then rather than a silent failure later). The job
runner hands each change to `send`, from the event loop or an inference thread: `send` only
builds the body and queues it, so neither the loop nor the model ever waits for a receiver.

Deliveries run as asyncio tasks on the server's loop, one lane per job so a job's events arrive
in order (a newer progress event replaces one still waiting); `runtime.jobs.delivery` makes the
attempts (each bounded, retried with backoff for a bounded time) and logs how each delivery
ended. At most `THAW_WEBHOOK_QUEUE_SIZE` deliveries wait in the process (more are dropped and
logged), so a slow receiver cannot hold memory without bound. At shutdown, pending deliveries
get `THAW_WEBHOOK_DRAIN_S`.

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
from typing import Any

from runtime.jobs import transport
from runtime.jobs.delivery import Deliverer, Delivery, JobEvent, Outcome
from runtime.jobs.destinations import (
    AllowList,
    Resolver,
    WebhookRefused,
    parse,
    system_resolve,
    vetted,
)
from runtime.jobs.store import Job
from runtime.settings import WebhookSettings

log = logging.getLogger("thaw.webhooks")

SUBMIT_RESOLVE_S = 2.0
"""How long a submission waits to learn its webhook host's addresses (no answer: accepted, and
every delivery attempt checks them again)."""

DEFAULT_EVENTS = (JobEvent.COMPLETED,)


@dataclass(frozen=True)
class Subscription:
    """What a job asked for: where, and which events. Kept in the job's request."""

    url: str
    events: tuple[JobEvent, ...]

    def as_request(self) -> dict[str, Any]:
        return {"webhook": self.url, "webhook_events": [event.value for event in self.events]}


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
        self.deliverer = Deliverer(
            settings,
            resolve=resolve,
            post=post,
            wall=wall,
            monotonic=monotonic,
            sleep=sleep,
            jitter=jitter,
        )
        self._view = view
        self._wall = wall
        self._monotonic = monotonic
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
                await vetted(destination, self.deliverer.resolve)
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
            self.deliverer.record(delivery, Outcome.DROPPED, 0)
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
                    await self.deliverer.deliver(delivery)
                finally:
                    with self._lock:
                        lane.popleft()
                        self._pending -= 1
        finally:
            with self._lock:
                self._driving.discard(job_id)
            if self._tasks.get(job_id) is asyncio.current_task():
                del self._tasks[job_id]

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
            self.deliverer.record(delivery, Outcome.ABANDONED, 0)
        return len(tasks) + len(left)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Deliver while inside; drain (bounded) on the way out."""
        self.start()
        try:
            yield
        finally:
            await self.drain()


def _iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


__all__ = ["DEFAULT_EVENTS", "JobEvent", "Subscription", "WebhookSender"]
