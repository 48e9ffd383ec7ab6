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
from collections.abc import AsyncIterator, Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from runtime.clock import SYSTEM_CLOCK, Clock
from runtime.errors import (
    DeadlineExceeded,
    Draining,
    InferenceFailed,
    ModelLost,
    OutOfMemory,
    ThawError,
)
from runtime.lifecycle.admission import AdmissionGate, Ticket
from runtime.lifecycle.idle import IdleUnloader
from runtime.lifecycle.notify import Notifier
from runtime.lifecycle.slot import ModelSlot
from runtime.lifecycle.states import ProcessState, SlotState
from runtime.observe.phases import PhaseRecorder
from runtime.observe.telemetry import Telemetry
from runtime.settings import PreloadPolicy, Settings
from runtime.work import Control, Work, running

log = logging.getLogger("thaw.service")

CRASH_LOOP = 5
"""This many worker deaths within THAW_UNHEALTHY_AFTER_S fail liveness, as a long failure does."""

LOST_RETRIES = 2
"""How many times work whose model died before it began is run again on a fresh model."""

M = TypeVar("M")
R = TypeVar("R")
P = TypeVar("P")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as seen (its request may be gone: a deadline, a
    drain cut-off), so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _each(model: Any, works: list[Callable[[Any], Any]]) -> list[Any]:
    """The batch function of `Service.run`: each work item called with the model."""
    return [work(model) for work in works]


@dataclass(frozen=True)
class Served(Generic[R]):
    """What `Service.run` returns: the work's value and where the time went."""

    value: R
    queue_s: float
    run_s: float
    cold: bool
    batch_size: int = 1


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
        self._cut = False  # the drain deadline passed: accepted requests are answered Draining
        self._cut_signal = Notifier()
        self.idle: IdleUnloader | None = None
        if settings.idle_unload_s > 0:
            self.idle = IdleUnloader(slot, self.gate, settings.idle_unload_s, clock=clock)
        self._idle_watch: asyncio.Task[None] | None = None
        self._preload_when_listening = False
        self._listening_at: float | None = None

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

    def preload_when_listening(self) -> None:
        """Leave the background preload to `listening()` instead of the lifespan: a server
        whose model worker would share its only CPU calls it once its socket accepts, so the
        worker's interpreter and imports do not delay the listening (handler/early.py)."""
        self._preload_when_listening = True

    async def listening(self) -> None:
        """The server accepts connections now: note when (`/health`'s cold start), and start a
        preload left for this moment."""
        if self._listening_at is None:
            self._listening_at = self._clock.monotonic()
        if self._preload_when_listening:
            self._preload_when_listening = False
            await self.astart()

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
        if first and self.slot.process_state is not ProcessState.SERVING:
            self.reopen()
        try:
            if not self._preload_when_listening:
                await self.astart()
            if first and self.idle is not None:
                self._idle_watch = asyncio.ensure_future(self.idle.watch())
            yield
        finally:
            with self._lock:
                self._holders -= 1
                last = self._holders == 0
            if last and self._idle_watch is not None:
                self._idle_watch.cancel()
                self._idle_watch = None
            if last and not self.settings.on_lambda:
                # A drain (runtime.lifecycle.drain) has usually emptied the gate by now; if its
                # deadline cut requests off, their threads may run on, and waiting for them again
                # would overrun the deadline the platform's grace period was sized for.
                grace = 0.0 if self._cut else self.settings.drain_timeout_s
                await self.shutdown(grace_s=grace)

    # -- the request path ----------------------------------------------------------------------

    def new_request_id(self) -> str:
        return f"r{next(self._ids)}"

    def reserve(self, request_id: str | None = None) -> Ticket:
        """Take a place now (or raise `Overloaded` / `Draining`) for work that runs later."""
        if self._cut:
            raise Draining("the server is shutting down", retry_after=1)
        return self.gate.reserve(request_id or self.new_request_id())

    async def run(
        self,
        work: Callable[[M], R],
        *,
        request_id: str | None = None,
        control: Control | None = None,
    ) -> Served[R]:
        """Run `work(model)` in a worker thread under admission and deadlines.

        If the drain deadline passes first (`cut_off`), the request is answered `Draining`; a
        thread already running the work finishes unobserved and then releases its place.
        """
        return await self.run_item(
            work, batch=_each, key=None, request_id=request_id, control=control
        )

    async def run_item(
        self,
        item: P,
        *,
        batch: Callable[[M, list[P]], list[R]],
        key: Hashable | None,
        request_id: str | None = None,
        control: Control | None = None,
        ticket: Ticket | None = None,
    ) -> Served[R]:
        """Run `batch(model, [item])` in a worker thread under admission and deadlines.

        `ticket` is a place taken earlier with `reserve` (an asynchronous job answers 429 or 202
        at submission, then runs); without it the place is taken now.

        `control` lets the caller cancel the work (it stops at its next step, see runtime.work)
        and hear its progress.

        With `max_batch > 1`, queued items with the same `key` (None: never batched) join the
        call of the one whose turn came, up to `max_batch` items, after waiting up to
        `batch_window_ms` for companions: `batch` then gets several items and returns one result
        per item, in order. Answered `Draining` once the drain deadline passes (`cut_off`).
        """
        if self._cut:
            if ticket is not None:
                self.gate.release(ticket)
            raise Draining("the server is shutting down", retry_after=1)
        attempt = asyncio.ensure_future(self._run(item, batch, key, request_id, control, ticket))
        cut = asyncio.ensure_future(self._cut_signal.wait_for_async(lambda: self._cut, None))
        try:
            await asyncio.wait({attempt, cut}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            attempt.cancel()
            raise
        finally:
            cut.cancel()
        if attempt.done():
            return attempt.result()
        attempt.cancel()
        await asyncio.wait({attempt})  # let its `finally` give the place back
        if not attempt.cancelled():
            attempt.exception()  # retrieved: it lost the race and its outcome is not the answer
        raise Draining("cut off at the drain deadline: the server is shutting down", retry_after=1)

    async def _run(
        self,
        item: P,
        batch: Callable[[M, list[P]], list[R]],
        key: Hashable | None,
        request_id: str | None,
        control: Control | None,
        reserved: Ticket | None,
    ) -> Served[R]:
        settings = self.settings
        arrived = self._clock.monotonic()
        cold = not self.slot.ready
        ticket = reserved or self.reserve(request_id)
        ticket.item = item
        ticket.control = control or Control()
        ticket.batch_key = key if settings.max_batch > 1 else None
        handed_off = False
        try:
            await self.slot.aget(timeout=settings.warm_wait_s)  # warm-up waits count here
            queue_left = settings.queue_timeout_s - (self._clock.monotonic() - arrived)
            await self.gate.wait_turn(ticket, timeout=max(0.0, queue_left))
            if ticket.rider:
                # Taken into another request's batch, which fills `outcome` and releases us.
                handed_off = True
                assert ticket.outcome is not None
                outcome: Future[tuple[Any, int]] = ticket.outcome
            else:
                await self._wait_for_companions(ticket)
                outcome = self._submit(ticket, batch)
                handed_off = True
            started = self._clock.monotonic()
            waiter = asyncio.wrap_future(outcome)
            waiter.add_done_callback(_retrieve)  # an answer nobody waits for any more
            # asyncio.wait never cancels the thread's future: a timed-out or disconnected request
            # leaves the work to finish, and its place is released when it does.
            done, _ = await asyncio.wait({waiter}, timeout=settings.request_timeout_s)
            if not done:
                self._stop_if_hung(outcome)
                raise DeadlineExceeded(
                    f"generation ran past its {settings.request_timeout_s:g}s deadline",
                    retry_after=self.gate.retry_after(),
                )
            try:
                value, batch_size = waiter.result()
            except ThawError:
                raise
            except Exception as exc:
                raise self._failure(exc, ticket) from exc
            with self._lock:
                self._served += 1  # answered with its result: what `served` counts
            served = Served(
                value=value,
                queue_s=started - arrived,
                run_s=self._clock.monotonic() - started,
                cold=cold,
                batch_size=batch_size,
            )
            self.telemetry.observe_served(served.queue_s, served.run_s, cold=cold)
            return served
        finally:
            if not handed_off:
                self.gate.release(ticket)

    async def _wait_for_companions(self, leader: Ticket) -> None:
        """Give requests for the same batch a short window to arrive (batching on only)."""
        wanted = self.settings.max_batch - 1
        window = self.settings.batch_window_ms / 1000
        if leader.batch_key is None or window <= 0:
            return
        if self.gate.waiting_with(leader.batch_key) < wanted:
            await asyncio.sleep(window)

    def _stop_if_hung(self, outcome: Future[Any]) -> None:
        """A generation past its deadline is left to finish; one still running at twice the
        deadline means a hung model (a stopped worker, a wedged kernel). A model that can be
        stopped (a worker process: `stoppable`) is then let go as lost: its process is killed,
        the calls on it fail and free their places, and a fresh one loads. A model in this
        process cannot be stopped: its thread keeps its place."""
        model = self.slot.peek()
        if not getattr(model, "stoppable", False):
            return
        grace = self.settings.request_timeout_s

        def check() -> None:
            if not outcome.done() and model is not None and self.slot.peek() is model:
                reason = (
                    f"a generation ran past twice its {grace:g}s deadline: "
                    "the model worker is hung and was stopped"
                )
                threading.Thread(target=self.slot.lost, args=(model, reason), daemon=True).start()

        asyncio.get_running_loop().call_later(grace, check)

    def _failure(self, exc: Exception, ticket: Ticket) -> ThawError:
        """What a failed generation means to the client. Out of memory may pass (503, retry
        later); any other failure would fail again (500, no Retry-After). The log names the
        error's type only: its text may quote the prompt."""
        kind = getattr(exc, "type_name", None) or type(exc).__name__  # a worker's RemoteError
        text = str(exc) if kind != type(exc).__name__ else f"{kind}: {exc}"
        log.warning("inference failed", extra={"request_id": ticket.label, "error_type": kind})
        if isinstance(exc, MemoryError) or "OutOfMemory" in kind or "out of memory" in text:
            return OutOfMemory(f"out of memory: {text}", retry_after=self.gate.retry_after())
        return InferenceFailed(f"inference failed: {text}")

    def _execute(
        self, batch: Callable[[M, list[Any]], list[Any]], items: list[Any], work: Work
    ) -> list[Any]:
        """In an inference thread: `batch` on the slot's model as it is now. Work whose model
        was lost before the work began on it (its worker died while it queued) runs again on
        the fresh model, which the slot is already loading; work that was running fails."""
        retries = LOST_RETRIES
        work.begin()
        while True:
            model = self.slot.get(timeout=self.settings.warm_wait_s)
            try:
                with running(work):
                    return batch(model, items)
            except ModelLost as lost:
                if lost.started or retries == 0:
                    raise
                retries -= 1
                log.info("model lost before the work began: it runs on the fresh model")

    def _submit(
        self, leader: Ticket, batch: Callable[[M, list[Any]], list[Any]]
    ) -> Future[tuple[Any, int]]:
        """Start the leader's call in a worker thread with whichever riders it can take; the
        callback gives every place back when the thread ends, then hands each its result."""
        group = [leader, *self.gate.take_riders(leader, self.settings.max_batch - 1)]
        own: Future[tuple[Any, int]] = Future()
        started = self._clock.monotonic()

        def finished(future: Future[list[Any]]) -> None:
            seconds = self._clock.monotonic() - started
            error = future.exception()
            results: list[Any] = [] if error is not None else list(future.result())
            if error is None and len(results) != len(group):
                error = RuntimeError(f"the batch gave {len(results)} results for {len(group)}")
            with self._lock:
                if error is not None and (
                    not isinstance(error, ThawError) or isinstance(error, ModelLost)
                ):
                    # A ThawError from the work is an answer (say a 422 the function could
                    # only decide with the model), not an inference error; a lost model is.
                    self._failed += len(group)
            # Places go back before any answer does: once a request has its answer, its place
            # is already free (the loop may resume a waiter before this thread goes on).
            for ticket in group:
                self.gate.release(ticket, served_seconds=seconds if ticket is leader else None)
            for index, ticket in enumerate(group):
                target = own if ticket is leader else ticket.outcome
                assert target is not None
                if error is not None:
                    target.set_exception(error)
                else:
                    target.set_result((results[index], len(group)))

        work = Work([ticket.control for ticket in group if ticket.control is not None])
        future = self._executor.submit(
            self._execute, batch, [ticket.item for ticket in group], work
        )
        future.add_done_callback(finished)
        return own

    # -- stopping --------------------------------------------------------------------------------

    def refuse_new(self) -> None:
        """Stop accepting: new work is refused, accepted work carries on."""
        self.gate.close()
        self.slot.close()

    async def shutdown(self, *, grace_s: float) -> list[str]:
        """Drain and release the model. Returns the ids of requests cut off at the deadline."""
        self.refuse_new()
        finished = await self.gate.wait_empty_async(grace_s)
        cut_off = [] if finished else self.cut_off()
        await asyncio.to_thread(self.slot.stop)  # releasing may wait for a worker process
        log.info("model released", extra={"slot": self.slot.name, "cut_off": len(cut_off)})
        return cut_off

    def cut_off(self) -> list[str]:
        """The drain deadline has passed: answer every accepted request `Draining` now and
        refuse new ones. Returns (and logs, once) the ids of the requests cut off."""
        self.gate.close()
        with self._cut_signal.lock:
            first = not self._cut
            self._cut = True
            self._cut_signal.notify_all()
        cut_off = self.gate.accepted_labels()
        if first and cut_off:
            log.warning("drain deadline reached", extra={"cut_off": cut_off})
        return cut_off

    def reopen(self) -> None:
        """Serve again after a shutdown (a new server in the same process, as in tests)."""
        with self._cut_signal.lock:
            self._cut = False
        self.gate.reopen()
        self.slot.reopen()

    def restarted(self, started: float, phases: PhaseRecorder, ready_at: float | None) -> None:
        """Count from a restore instead of the snapshot's INIT (Lambda SnapStart): uptime from
        `started`, the restore's `phases`, first ready at `ready_at`."""
        self._created_at = started
        self.slot.restarted(phases, ready_at)

    # -- reporting ---------------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Requests will be served now. After an idle unload that stays true while the model is
        cold or reloading: the process is idle, not broken, and a readiness probe that failed
        would keep away the very request that loads the model again."""
        if self.gate.closed:
            return False
        if self.slot.ready:
            return True
        idle_cold = self.idle is not None and self.idle.unloaded
        return idle_cold and self.slot.state in (SlotState.COLD, SlotState.LOADING)

    def unhealthy(self) -> str | None:
        """Why the process should be restarted, or None. A model failing without a successful
        load for longer than `THAW_UNHEALTHY_AFTER_S` (0: never) fails liveness: the load keeps
        retrying in the background, but a GPU in a bad state does not heal in-process, and a
        fresh container may land on a healthy one."""
        bound = self.settings.unhealthy_after_s
        snap = self.slot.snapshot()
        if bound <= 0:
            return None
        if snap.failing_s is not None and snap.failing_s >= bound:
            return f"the model has failed to load for {snap.failing_s:.0f}s (limit {bound:g}s)"
        recent = [ago for ago in snap.lost_ago if ago <= bound]
        if len(recent) >= CRASH_LOOP:
            # Each reload succeeds, so the model never counts as failing; a worker that dies
            # this often (a broken GPU, a poisoned driver) needs a fresh container just as much.
            return f"the model's worker died {len(recent)} times in {bound:g}s"
        return None

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
            "status": snap.status,
            "load_attempts": snap.load_attempts,
            "loads_completed": snap.loads_completed,
            "load_seconds": None if snap.load_seconds is None else round(snap.load_seconds, 3),
            "phases": snap.phases,
            # Where the phases' `start_s` count from, in seconds of uptime: a timeline from the
            # process's start places each phase at `load_started_s + start_s`.
            "load_started_s": None
            if snap.attempt_started_at is None
            else round(snap.attempt_started_at - self._created_at, 3),
            "last_error": snap.last_error,
            "retry_in_s": None if snap.retry_in_s is None else round(snap.retry_in_s, 1),
            "failing_s": None if snap.failing_s is None else round(snap.failing_s, 1),
            "models_lost": snap.lost,
            "inflight": self.gate.running,
            "queued": self.gate.queued,
            "served": served,
            "inference_errors": failed,
            "uptime_s": round(now - self._created_at, 3),
            "cold_start": {
                # When `python -m handler` began to accept connections (None under another
                # server, which does not say), and when the model was first ready.
                "listening_after_s": None
                if self._listening_at is None
                else round(self._listening_at - self._created_at, 3),
                "ready_after_s": ready_after,
            },
        }
