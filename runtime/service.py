"""The service: one model slot behind one admission gate, with the process's lifecycle.

`Service.run` is the request path every entry point shares: reserve a place (or 429/503 at once),
wait for the model within the warm-up budget, wait for a turn, run the work in a worker thread
with a deadline, release the place when the thread really ends.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from runtime.admission import AdmissionGate
from runtime.clock import SYSTEM_CLOCK, Clock
from runtime.errors import DeadlineExceeded, InferenceFailed, ThawError
from runtime.settings import PreloadPolicy, Settings
from runtime.slot import ModelSlot
from runtime.states import SlotState
from runtime.telemetry import Telemetry

log = logging.getLogger("thaw.service")

M = TypeVar("M")
R = TypeVar("R")


@dataclass(frozen=True)
class Served(Generic[R]):
    """What `Service.run` returns: the work's value and where the time went."""

    value: R
    queue_s: float
    run_s: float
    cold: bool


class Service(Generic[M]):
    """Drives a `ModelSlot` for one process: preload, admission, inference threads, shutdown."""

    def __init__(
        self,
        slot: ModelSlot[M],
        settings: Settings,
        *,
        gate: AdmissionGate | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.slot = slot
        self.settings = settings
        self.gate = gate or AdmissionGate(settings.max_concurrency, settings.queue_size)
        self._clock = clock
        self._created_at = clock.monotonic()
        self._executor = ThreadPoolExecutor(
            max_workers=self.gate.limit, thread_name_prefix="thaw-infer"
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._holders = 0
        self._served = 0
        self._failed = 0
        self.telemetry = Telemetry()

    # -- start ---------------------------------------------------------------------------------

    def start(self, policy: PreloadPolicy | None = None) -> None:
        """Apply the preload policy from sync code (Lambda INIT, a CLI). Idempotent."""
        policy = policy or self.settings.preload
        if policy is PreloadPolicy.LAZY:
            return
        self.slot.start()
        if policy is PreloadPolicy.EAGER:
            self.slot.get(timeout=None)

    async def astart(self, policy: PreloadPolicy | None = None) -> None:
        """Apply the preload policy from async code without blocking the loop. Idempotent."""
        policy = policy or self.settings.preload
        if policy is PreloadPolicy.LAZY:
            return
        self.slot.start()
        if policy is PreloadPolicy.EAGER:
            await self.slot.aget(timeout=None)

    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """An ASGI lifespan that may be entered more than once in a process.

        Entering starts the preload (once); leaving releases the model only when the last holder
        leaves a process that is really stopping. On Lambda, Mangum re-runs the lifespan around
        every invocation (mangum#342), so there leaving never releases anything.
        """
        with self._lock:
            self._holders += 1
            first = self._holders == 1
        if first and self.slot.state in (SlotState.DRAINING, SlotState.STOPPED):
            self.reopen()
        try:
            await self.astart()
            yield
        finally:
            with self._lock:
                self._holders -= 1
                last = self._holders == 0
            if last and not self.settings.on_lambda:
                await self.shutdown(grace_s=self.settings.request_timeout_s)

    # -- the request path ----------------------------------------------------------------------

    def new_request_id(self) -> str:
        return f"r{next(self._ids)}"

    async def run(self, work: Callable[[M], R], *, request_id: str | None = None) -> Served[R]:
        """Run `work(model)` in a worker thread under admission and deadlines."""
        settings = self.settings
        arrived = self._clock.monotonic()
        cold = not self.slot.ready
        ticket = self.gate.reserve(request_id or self.new_request_id())
        handed_off = False
        try:
            model = await self.slot.aget(timeout=settings.warm_wait_s)
            queue_left = settings.queue_timeout_s - (self._clock.monotonic() - arrived)
            await self.gate.wait_turn(ticket, timeout=max(0.0, queue_left))
            started = self._clock.monotonic()
            future = self._executor.submit(work, model)
            future.add_done_callback(lambda f: self._finished(f, ticket, started))
            handed_off = True
            waiter = asyncio.wrap_future(future)
            # asyncio.wait never cancels the thread's future: a timed-out or disconnected request
            # leaves the work to finish, and its place is released by _finished when it does.
            done, _ = await asyncio.wait({waiter}, timeout=settings.request_timeout_s)
            if not done:
                raise DeadlineExceeded(
                    f"generation ran past its {settings.request_timeout_s:g}s deadline",
                    retry_after=self.gate.retry_after(),
                )
            try:
                value = waiter.result()
            except ThawError:
                raise
            except Exception as exc:
                log.warning("inference failed", extra={"request_id": ticket.id}, exc_info=exc)
                raise InferenceFailed(
                    f"inference failed: {type(exc).__name__}: {exc}", retry_after=1
                ) from exc
            served = Served(
                value=value,
                queue_s=started - arrived,
                run_s=self._clock.monotonic() - started,
                cold=cold,
            )
            self.telemetry.observe_served(served.queue_s, served.run_s, cold=cold)
            return served
        finally:
            if not handed_off:
                self.gate.release(ticket)

    def _finished(self, future: Future[Any], ticket: Any, started: float) -> None:
        seconds = self._clock.monotonic() - started
        with self._lock:
            if future.exception() is None:
                self._served += 1
            else:
                self._failed += 1
        self.gate.release(ticket, served_seconds=seconds)

    # -- stopping --------------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """Stop accepting: new work is refused, accepted work carries on."""
        self.gate.close()
        self.slot.drain()

    async def shutdown(self, *, grace_s: float) -> list[str]:
        """Drain and release the model. Returns the ids of requests cut off at the deadline."""
        self.begin_drain()
        finished = await self.gate.wait_empty_async(grace_s)
        cut_off = [] if finished else self.gate.accepted_ids()
        if cut_off:
            log.warning("drain deadline reached", extra={"cut_off": cut_off})
        self.slot.stop()
        return cut_off

    def reopen(self) -> None:
        """Serve again after a shutdown (a new server in the same process, as in tests)."""
        self.gate.reopen()
        self.slot.reset()

    # -- reporting ---------------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self.slot.ready and not self.gate.closed

    def health(self) -> dict[str, Any]:
        """The runtime's part of `/health`: state, load history, queue, uptime."""
        snap = self.slot.snapshot()
        now = self._clock.monotonic()
        ready_after = (
            None
            if snap.first_ready_at is None
            else round(snap.first_ready_at - self._created_at, 3)
        )
        with self._lock:
            served, failed = self._served, self._failed
        return {
            "status": snap.state.public_name,
            "load_attempts": snap.load_attempts,
            "loads_completed": snap.loads_completed,
            "load_seconds": None if snap.load_seconds is None else round(snap.load_seconds, 3),
            "phases": snap.phases,
            "last_error": snap.last_error,
            "retry_in_s": None if snap.retry_in_s is None else round(snap.retry_in_s, 1),
            "inflight": self.gate.running,
            "queued": self.gate.queued,
            "served": served,
            "inference_errors": failed,
            "uptime_s": round(now - self._created_at, 3),
            "cold_start": {"ready_after_s": ready_after},
        }
