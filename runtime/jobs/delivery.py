"""One webhook delivery: attempts, each bounded, retried with backoff for a bounded time, and the
log record that says how it ended.

An attempt resolves the host and vets its addresses (`destinations.vetted`), signs the body with
the attempt's own timestamp and POSTs it (`transport.post`), all within `THAW_WEBHOOK_TIMEOUT_S`.
No answer, a 408, a 429 or a 5xx is worth another attempt after a backoff that doubles from
`THAW_WEBHOOK_BACKOFF_S` (at most `BACKOFF_MAX_S`, jittered down to half, never shorter than a
`Retry-After`), until the next wait would end past `THAW_WEBHOOK_RETRY_S`; any other answer ends
the delivery, as the Standard Webhooks specification recommends (a 3xx is not followed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from runtime.jobs import transport
from runtime.jobs.destinations import Destination, Resolver, WebhookRefused, vetted
from runtime.jobs.signing import signed_headers
from runtime.settings import WebhookSettings

log = logging.getLogger("thaw.webhooks")

BACKOFF_MAX_S = 60.0
"""The longest wait between two attempts that backoff alone makes (`Retry-After` may ask more)."""

CONNECTIONS = 64
"""Attempts in flight at once, whatever the number of jobs: a file descriptor each."""

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
class Delivery:
    """One event for one webhook: its id stays the same across attempts."""

    webhook_id: str
    job_id: str
    event: JobEvent
    destination: Destination
    body: bytes


@dataclass
class Attempt:
    """How one attempt went; no `outcome` when another attempt may succeed."""

    outcome: Outcome | None
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


class Deliverer:
    """Carries deliveries out: attempts, backoff, the log record. Time, sleep, jitter, the
    resolver and the POST are injectable so tests can drive them."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        resolve: Resolver,
        post: transport.Post = transport.post,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.resolve = resolve
        self._post = post
        self._wall = wall
        self._monotonic = monotonic
        self._sleep = sleep
        self._jitter = jitter
        self._connections: asyncio.Semaphore | None = None  # made on the loop that uses it

    async def deliver(self, delivery: Delivery) -> None:
        """Attempt until delivered, refused, rejected or out of budget; log how it went. A
        cancel (the shutdown's drain ran out) is logged as abandoned and propagates."""
        started = self._monotonic()
        attempts = 0
        attempt = Attempt(None)
        try:
            while True:
                attempts += 1
                attempt = await self.attempt(delivery)
                if attempt.outcome is not None:
                    break
                wait = self.backoff(attempts, attempt.retry_after_s)
                if self._monotonic() - started + wait > self.settings.retry_s:
                    attempt.outcome = Outcome.GAVE_UP
                    break
                await self._sleep(wait)
        except asyncio.CancelledError:
            self.record(delivery, Outcome.ABANDONED, attempts, attempt, started)
            raise
        self.record(delivery, attempt.outcome, attempts, attempt, started)

    async def attempt(self, delivery: Delivery) -> Attempt:
        if self._connections is None:
            self._connections = asyncio.Semaphore(CONNECTIONS)
        async with self._connections:
            headers = signed_headers(
                self.settings.keys, delivery.webhook_id, int(self._wall()), delivery.body
            )
            try:
                async with asyncio.timeout(self.settings.timeout_s):
                    addresses = await vetted(delivery.destination, self.resolve)
                    answer = await self._post(
                        delivery.destination, addresses, headers, delivery.body
                    )
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

    def backoff(self, attempts: int, retry_after_s: float | None) -> float:
        """Exponential from `backoff_s`, capped, jittered down to half (so receivers that
        failed together are not retried together); at least what `Retry-After` asked."""
        base = min(self.settings.backoff_s * 2.0 ** (attempts - 1), BACKOFF_MAX_S)
        wait = base * (0.5 + self._jitter() / 2)
        return max(wait, retry_after_s or 0.0)

    def record(
        self,
        delivery: Delivery,
        outcome: Outcome,
        attempts: int,
        attempt: Attempt | None = None,
        started: float | None = None,
    ) -> None:
        """The delivery's one log record: `webhook delivered`, `webhook failed`, `webhook
        dropped` or `webhook abandoned`, with its outcome, attempts and last status."""
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
