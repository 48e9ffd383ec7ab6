"""The drain: how a stopping process finishes what it accepted, in the order platforms need.

Kubernetes (and Knative, and Cloud Run) take a pod out of the Service's endpoints at the same
time as they send it SIGTERM, not before, so for a moment new requests still arrive. The order:

1. at once: the state is `draining`, readiness fails (`/readyz` 503), liveness stays 200;
2. for `delay_s` (`THAW_DRAIN_DELAY_S`, default 0) new requests are still served, while the
   endpoint removal propagates; after it they are refused with `Draining` (503, Retry-After);
3. accepted requests, running or queued, finish;
4. the caller closes its listener and releases the model (`Service.shutdown`).

`timeout_s` (`THAW_DRAIN_TIMEOUT_S`) counts from the signal and bounds steps 1 to 3: at the
deadline every request still accepted is answered `Draining` and its id logged
(`Service.cut_off`); an inference thread that is still running is left to the process exit.

Nothing here knows about signals, HTTP servers or uvicorn: the entry point calls `run` on its
event loop when a stop is asked for and closes its listener when `run` returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from runtime.clock import SYSTEM_CLOCK, Clock
from runtime.lifecycle.service import Service

log = logging.getLogger("thaw.drain")

EXIT_CUT_OFF = 1
"""The process's exit status when the deadline cut accepted requests off (0 when none were)."""

LISTENER_CLOSE_S = 2
"""After the drain every answer has been produced; open connections get this long to take it
before the server closes them. A platform's grace period must cover the drain timeout plus
this (tests/infra checks the manifests)."""


@dataclass(frozen=True)
class DrainReport:
    """How a drain ended."""

    reason: str
    seconds: float
    cut_off: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """Every accepted request finished before the deadline."""
        return not self.cut_off

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else EXIT_CUT_OFF


class Drain:
    """Drains one `Service`. `begin` is thread-safe; `run` runs on the server's event loop."""

    def __init__(
        self,
        service: Service[Any],
        *,
        delay_s: float | None = None,
        timeout_s: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        settings = service.settings
        self.service = service
        self.delay_s = settings.drain_delay_s if delay_s is None else delay_s
        self.timeout_s = settings.drain_timeout_s if timeout_s is None else timeout_s
        if self.delay_s < 0 or self.timeout_s <= 0:
            raise ValueError("delay_s must be >= 0 and timeout_s > 0")
        self._clock = clock
        self._lock = threading.Lock()
        self._started_at: float | None = None
        self._hurry: asyncio.Event | None = None
        self._hurried = False

    @property
    def started(self) -> bool:
        with self._lock:
            return self._started_at is not None

    def fail_readiness(self) -> bool:
        """Fail readiness at once (the state becomes `draining`); requests are still served.
        Returns True for the call that started the drain."""
        with self._lock:
            if self._started_at is not None:
                return False
            self._started_at = self._clock.monotonic()
        self.service.slot.close()
        return True

    def hurry(self) -> None:
        """Move the deadline to now (a second Ctrl+C). Call it on the drain's event loop."""
        self._hurried = True
        if self._hurry is not None:
            self._hurry.set()

    async def run(self, reason: str) -> DrainReport:
        """Drain in order and return when accepted work is done or the deadline has passed."""
        self.fail_readiness()
        self._hurry = asyncio.Event()
        if self._hurried:
            self._hurry.set()
        gate = self.service.gate
        log.info(
            "drain started",
            extra={
                "reason": reason,
                "accepted": gate.accepted,
                "delay_s": self.delay_s,
                "timeout_s": self.timeout_s,
            },
        )
        if self.delay_s > 0:
            await self._until(asyncio.sleep(min(self.delay_s, self._left())))
        self.service.refuse_new()
        log.info("drain: refusing new requests", extra={"accepted": gate.accepted})
        finished = await self._until(gate.wait_empty_async(None))
        cut_off = [] if finished else self.service.cut_off()
        report = DrainReport(reason=reason, seconds=self._elapsed(), cut_off=tuple(cut_off))
        log.info(
            "drain finished",
            extra={
                "reason": reason,
                "seconds": round(report.seconds, 3),
                "clean": report.clean,
                "cut_off": list(report.cut_off),
            },
        )
        return report

    # -- time ------------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        started = self._started_at if self._started_at is not None else self._clock.monotonic()
        return self._clock.monotonic() - started

    def _left(self) -> float:
        return max(0.0, self.timeout_s - self._elapsed())

    async def _until(self, awaitable: Awaitable[Any]) -> bool:
        """Await within the deadline (or until hurried). True when it finished with a truthy
        value or None (a sleep); False when time ran out first."""
        if self._hurry is None:
            raise RuntimeError("Drain._until runs only inside Drain.run")
        work = asyncio.ensure_future(awaitable)
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait(
                {work, hurry}, timeout=self._left(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            hurry.cancel()
            if not work.done():
                work.cancel()
        if not work.done() or work.cancelled():
            return False
        return work.result() is not False
