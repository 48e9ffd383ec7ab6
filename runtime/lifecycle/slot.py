"""The lazy single-flight model slot: one model per process, loaded once, whoever asks.

A `ModelSlot` is created at module level and holds nothing until something asks (lifespan
preload, Lambda INIT, a warm-up ping, the first request, a CLI). However many callers ask at
once, exactly one loader thread runs; everyone else waits on it. The heavy imports happen inside
the loader, so they are covered by the single flight too: two concurrent `from diffusers import`
in one process were seen to leave a broken pipeline behind.

The slot heals itself: a model that can die (a worker process: it offers `when_lost`) reports its
death here, and the slot releases it and loads a fresh one at once, with no request needed; a
failed load is tried again in the background after a cool-down that doubles with each failed
load up to a cap. A not-ready pod gets no traffic on Kubernetes, Knative or behind KEDA, so a
slot that waited for a request to recover would never recover. A new load never overlaps the
release of the previous model (`RELEASING`).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from runtime.clock import SYSTEM_CLOCK, Clock
from runtime.errors import Draining, LoadFailed, WarmingUp
from runtime.lifecycle.notify import Notifier
from runtime.lifecycle.states import ProcessState, SlotState, public_status
from runtime.observe.phases import PhaseRecorder

log = logging.getLogger("thaw.slot")

RECHECK_S = 0.5
"""The shortest wait between two looks at a failed slot's cool-down (see `_retry_later`)."""

LOST_REMEMBERED = 16
"""How many recent model losses the slot keeps the times of (for a crash-loop check)."""

M = TypeVar("M")
Loader = Callable[[PhaseRecorder], M]
Releaser = Callable[[M], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing load is retried: `attempts` tries per load, exponential backoff between
    them, then a cool-down before a fresh load starts by itself (or on demand). The cool-down
    doubles with each consecutive failed load, up to `cooldown_max_s`.

    `attempt_timeout_s` is for loaders that cannot be stopped (a thread in this process): an
    attempt running past it fails the load and no other starts while it may still finish (see
    `ModelSlot._hang`). A loader that can be stopped (a worker process) enforces its own timeout
    and raises, which counts as one failed attempt like any other."""

    attempts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    cooldown_s: float = 30.0
    cooldown_max_s: float = 300.0
    attempt_timeout_s: float | None = None

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the `failed_attempts`-th consecutive failure."""
        return float(min(self.backoff_s * 2 ** (failed_attempts - 1), self.backoff_max_s))

    def cooldown(self, failed_loads: int) -> float:
        """Seconds before the next load after the `failed_loads`-th consecutive failed load."""
        return float(min(self.cooldown_s * 2 ** (failed_loads - 1), self.cooldown_max_s))


class _Attempt(Generic[M]):
    """One call of the loader, in its own daemon thread, so the supervisor can time it out."""

    def __init__(self, loader: Loader[M], phases: PhaseRecorder, *, name: str) -> None:
        self.model: M | None = None
        self.error: Exception | None = None
        self._done = threading.Event()
        self._loader = loader
        self._phases = phases
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            self.model = self._loader(self._phases)
        except Exception as exc:  # the loader is user code: any failure is a load failure
            self.error = exc
        finally:
            self._done.set()

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)


@dataclass(frozen=True)
class SlotSnapshot:
    """A consistent view of the slot for probes and logs."""

    name: str
    state: SlotState
    process: ProcessState
    load_attempts: int
    loads_completed: int
    load_seconds: float | None
    phases: list[dict[str, Any]]
    last_error: str | None
    retry_in_s: float | None
    first_ready_at: float | None
    failing_s: float | None
    """Seconds the model has been failing without a successful load since (None: not failing)."""
    lost: int
    """How many times a loaded model was lost (its worker died)."""
    lost_ago: tuple[float, ...]
    """Seconds since each of the latest losses, newest first."""
    attempt_started_at: float | None = None
    """When the latest load attempt started, on the slot's clock: the origin of `phases`'
    `start_s` (None before the first attempt)."""

    @property
    def status(self) -> str:
        """The word probes report (see `public_status`)."""
        return public_status(self.state, self.process)


class ModelSlot(Generic[M]):
    """Holds at most one model; loads it exactly once per demand, in a background thread.

    All methods are thread-safe. `get` blocks the calling thread; `aget` waits without blocking
    the running event loop (any loop). Neither starts a load while the process is stopping.
    """

    def __init__(
        self,
        name: str,
        loader: Loader[M] | None = None,
        *,
        release: Releaser[M] | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self._loader = loader
        self._release = release
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._notifier = Notifier()
        self._lock = self._notifier.lock
        self._state = SlotState.COLD
        self._process = ProcessState.SERVING
        self._model: M | None = None
        self._attempts = 0
        self._loads_completed = 0
        self._load_seconds: float | None = None
        self._phases = PhaseRecorder(clock)
        self._last_error: str | None = None
        self._failed_at: float | None = None
        self._retry_at: float | None = None
        self._thread: threading.Thread | None = None
        self._first_ready_at: float | None = None
        self._hung = False
        self._runs = 0  # loads begun: a background retry starts only if none began since
        self._failed_loads = 0  # consecutive loads that ended FAILED
        self._cooldown = self._retry.cooldown_s
        self._failing_since: float | None = None
        self._load_wanted = False  # a demand came while the previous model was releasing
        self._lost = 0
        self._lost_at: collections.deque[float] = collections.deque(maxlen=LOST_REMEMBERED)

    # -- configuration ---------------------------------------------------------------------

    def bind(
        self,
        loader: Loader[M],
        *,
        release: Releaser[M] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Set the loader. Allowed while no model is held or loading."""
        with self._lock:
            if self._state in (SlotState.LOADING, SlotState.READY, SlotState.RELEASING):
                raise RuntimeError(f"slot {self.name!r} is {self._state.value}; cannot rebind")
            self._loader = loader
            self._release = release
            if retry is not None:
                self._retry = retry

    # -- reading -----------------------------------------------------------------------------

    @property
    def state(self) -> SlotState:
        """The model's state."""
        with self._lock:
            return self._state

    @property
    def process_state(self) -> ProcessState:
        """Whether the process still serves, drains, or has stopped."""
        with self._lock:
            return self._process

    @property
    def ready(self) -> bool:
        """True when a request would be served by a loaded model now."""
        self._notice_death()
        with self._lock:
            return self._state is SlotState.READY and self._process is ProcessState.SERVING

    def peek(self) -> M | None:
        """The model if loaded, without starting anything."""
        with self._lock:
            return self._model

    def snapshot(self) -> SlotSnapshot:
        with self._lock:
            now = self._clock.monotonic()
            retry_in = None
            if self._state is SlotState.FAILED and self._failed_at is not None:
                retry_in = max(0.0, self._failed_at + self._cooldown - now)
            elif self._state is SlotState.LOADING and self._retry_at is not None:
                retry_in = max(0.0, self._retry_at - now)
            return SlotSnapshot(
                name=self.name,
                state=self._state,
                process=self._process,
                load_attempts=self._attempts,
                loads_completed=self._loads_completed,
                load_seconds=self._load_seconds,
                phases=self._phases.snapshot(),
                last_error=self._last_error,
                retry_in_s=retry_in,
                first_ready_at=self._first_ready_at,
                failing_s=None if self._failing_since is None else now - self._failing_since,
                lost=self._lost,
                lost_ago=tuple(now - at for at in reversed(self._lost_at)),
                attempt_started_at=self._phases.origin if self._attempts else None,
            )

    # -- demanding the model -------------------------------------------------------------------

    def start(self) -> bool:
        """Begin loading in the background unless a load runs or the model is loaded.

        Returns True when this call started the load. Never raises for a failed slot in its
        cool-down: it simply does not start (the state says why).
        """
        with self._lock:
            if self._process is not ProcessState.SERVING or self._state in (
                SlotState.LOADING,
                SlotState.READY,
            ):
                return False
            if self._state is SlotState.RELEASING:
                self._load_wanted = True  # starts when the release is done
                return False
            if self._state is SlotState.FAILED and self._cooling_down():
                return False
            self._begin_load()
            return True

    def get(self, timeout: float | None = None) -> M:
        """Return the model, loading it if needed; block up to `timeout` seconds."""
        self._demand()
        self._notifier.wait_for(self._settled, timeout)
        return self._outcome()

    async def aget(self, timeout: float | None = None) -> M:
        """Return the model, loading it if needed; wait up to `timeout`, never blocking the loop."""
        self._demand()
        await self._notifier.wait_for_async(self._settled, timeout)
        return self._outcome()

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait until no load is running (ready, failed or cold); start nothing."""
        return self._notifier.wait_for(
            lambda: self._state not in (SlotState.LOADING, SlotState.RELEASING), timeout
        )

    def restarted(self, phases: PhaseRecorder, ready_at: float | None) -> None:
        """This process starts anew from a snapshot taken with the model loaded (Lambda
        SnapStart): report `phases` (the restore) and `ready_at` instead of the snapshot's load."""
        with self._lock:
            self._phases = phases
            if self._first_ready_at is not None and ready_at is not None:
                self._first_ready_at = ready_at

    # -- letting go ------------------------------------------------------------------------------

    def unload(self, *, only_if: Callable[[], bool] | None = None) -> bool:
        """Release a loaded model and go back to COLD; the next demand loads again.

        `only_if` is checked under the slot's lock, so a caller that gets the model hands it out
        either before the check (and `only_if` can see that) or after the unload (and loads anew).
        Nothing is unloaded while the process is stopping: accepted work may still need it.
        """
        with self._lock:
            if self._state is not SlotState.READY or self._process is not ProcessState.SERVING:
                return False
            if only_if is not None and not only_if():
                return False
            model = self._begin_release()
        log.info("model unloaded", extra={"slot": self.name})
        self._finish_release(model, reload=False)
        return True

    def lost(self, model: M, reason: str) -> bool:
        """`model` died (its worker exited): release it and load a fresh one now, with no
        request needed. Only that model is let go: a report about a model the slot no longer
        holds (already replaced) changes nothing. Returns True when it was the slot's model."""
        with self._lock:
            if self._model is not model or self._state is not SlotState.READY:
                return False
            self._last_error = f"ModelLost: {reason}"
            self._lost += 1
            self._lost_at.append(self._clock.monotonic())
            released = self._begin_release()
        log.warning("model lost: loading a fresh one", extra={"slot": self.name, "reason": reason})
        self._finish_release(released, reload=True)
        return True

    def close(self) -> None:
        """The process is stopping: no load starts; a loaded model stays for accepted work."""
        with self._lock:
            if self._process is ProcessState.SERVING:
                self._process = ProcessState.DRAINING
                self._notifier.notify_all()

    def stop(self) -> None:
        """Release the model for good. A load still running releases its model when it ends."""
        with self._lock:
            self._process = ProcessState.STOPPED
            model = self._begin_release() if self._state is SlotState.READY else None
            self._notifier.notify_all()
        if model is not None:
            self._finish_release(model, reload=False)

    def reopen(self) -> None:
        """Serve again after `close`/`stop` (a new server in the same process, as in tests)."""
        with self._lock:
            if self._process is not ProcessState.SERVING:
                self._process = ProcessState.SERVING
                self._notifier.notify_all()

    # -- internals (the lock is held where noted) -------------------------------------------------

    def _begin_release(self) -> M | None:  # lock held
        model, self._model = self._model, None
        self._state = SlotState.RELEASING
        self._notifier.notify_all()
        return model

    def _finish_release(self, model: M | None, *, reload: bool) -> None:
        """Release `model` (lock not held: a worker may take seconds to exit), then COLD, and
        start the load that waited for the release, if one is wanted."""
        self._release_model(model)
        with self._lock:
            self._state = SlotState.COLD
            wanted, self._load_wanted = self._load_wanted or reload, False
            # A model lost while draining is reloaded too: the accepted work still needs it
            # (the drain's deadline bounds the wait); a stopped process loads nothing.
            loads = self._process is ProcessState.SERVING or (
                reload and self._process is ProcessState.DRAINING
            )
            if wanted and loads:
                self._begin_load()
            self._notifier.notify_all()

    def _cooling_down(self) -> bool:  # lock held
        if self._hung:
            return True
        if self._failed_at is None:
            return False
        return self._clock.monotonic() < self._failed_at + self._cooldown

    def _settled(self) -> bool:  # lock held
        busy = self._state in (SlotState.LOADING, SlotState.RELEASING)
        return not busy or self._process is ProcessState.STOPPED

    def _notice_death(self) -> None:
        """A model that can tell it is gone (a worker process: `exited`) is asked before it is
        handed out, so a death its watcher has not reported yet (right after a Lambda thaw,
        say) starts the reload now instead of failing the request that found it."""
        with self._lock:
            model = self._model if self._state is SlotState.READY else None
        exited = getattr(model, "exited", None)
        reason = exited() if model is not None and callable(exited) else None
        if model is not None and reason is not None:
            self.lost(model, reason)

    def _demand(self) -> None:
        self._notice_death()
        with self._lock:
            if self._process is ProcessState.STOPPED:
                raise Draining("the model was released: the process is stopping", retry_after=1)
            if self._state in (SlotState.LOADING, SlotState.READY):
                return
            if self._process is ProcessState.DRAINING:
                raise Draining("the process is stopping; no new load starts", retry_after=1)
            if self._state is SlotState.RELEASING:
                self._load_wanted = True  # the release starts it when the old model is gone
                return
            if self._state is SlotState.FAILED and self._cooling_down():
                return  # _outcome reports the failure with the time left
            self._begin_load()

    def _outcome(self) -> M:
        with self._lock:
            if self._process is ProcessState.STOPPED:
                raise Draining("the model was released: the process is stopping", retry_after=1)
            if self._state is SlotState.READY and self._model is not None:
                return self._model
            if self._state is SlotState.FAILED:
                now = self._clock.monotonic()
                failed_at = self._failed_at if self._failed_at is not None else now
                retry_in = max(1.0, failed_at + self._cooldown - now)
                if self._hung:
                    retry_in = max(retry_in, self._cooldown)
                raise LoadFailed(self._last_error or "unknown error", retry_after=retry_in)
            if self._state is SlotState.LOADING:
                retry_in = 1.0
                if self._retry_at is not None:
                    retry_in = max(retry_in, self._retry_at - self._clock.monotonic())
                raise WarmingUp("the model is still loading", retry_after=retry_in)
            if self._state is SlotState.RELEASING:
                raise WarmingUp("the previous model is still being released", retry_after=1)
            raise WarmingUp("the model is not loaded", retry_after=1)

    def _begin_load(self) -> None:  # lock held
        if self._loader is None:
            raise RuntimeError(f"slot {self.name!r} has no loader bound")
        self._state = SlotState.LOADING
        self._retry_at = None
        self._runs += 1
        loader = self._loader
        self._thread = threading.Thread(
            target=self._run_load, args=(loader,), name=f"thaw-load-{self.name}", daemon=True
        )
        self._notifier.notify_all()
        self._thread.start()

    def _run_load(self, loader: Loader[M]) -> None:
        """The supervising thread: attempts with backoff until success or attempts run out."""
        run_started = self._clock.monotonic()
        failures = 0
        while True:
            recorder = PhaseRecorder(self._clock)
            with self._lock:
                self._attempts += 1
                self._phases = recorder
                self._retry_at = None
                attempt = self._attempts
            log.info("model load started", extra={"slot": self.name, "attempt": attempt})
            outcome = _Attempt(loader, recorder, name=f"thaw-load-{self.name}-{attempt}")
            if not outcome.wait(self._retry.attempt_timeout_s):
                if self._hang(outcome, attempt, run_started):
                    self._retry_later()
                return
            if outcome.error is None:
                self._settle(outcome.model, run_started)
                return
            failures += 1
            final = failures >= self._retry.attempts
            delay = self._fail(outcome.error, attempt, failures=failures, final=final)
            if delay is None:
                self._retry_later()
                return
            self._clock.sleep(delay)

    def _retry_later(self) -> None:
        """After a failed load: wait out the cool-down, then load again unless something else
        started a load meanwhile or the process is stopping. Runs on the finished load's thread.
        The wait is woken by every change of the slot, so a stopping process frees it at once."""
        with self._lock:
            if self._state is not SlotState.FAILED or self._process is not ProcessState.SERVING:
                return
            run = self._runs

        def moved_on() -> bool:  # lock held
            return self._runs != run or self._process is not ProcessState.SERVING

        while True:
            with self._lock:
                if moved_on():
                    return
                if not self._cooling_down():
                    if self._state is SlotState.FAILED:
                        log.info("retrying the failed load", extra={"slot": self.name})
                        self._begin_load()
                    return
                now = self._clock.monotonic()
                left = (self._failed_at or now) + self._cooldown - now
            # At least RECHECK_S: a clock that does not move with real time (a test's) or a
            # hung attempt's endless cool-down must not turn this wait into a spin.
            self._notifier.wait_for(moved_on, max(left, RECHECK_S))

    def _fail(
        self, error: Exception, attempt: int, *, failures: int = 1, final: bool
    ) -> float | None:
        """Record a failed attempt; return the backoff before the next one, or None if final."""
        reason = f"{type(error).__name__}: {error}"
        log.warning(
            "model load failed",
            extra={"slot": self.name, "attempt": attempt, "error": reason},
            exc_info=error,
        )
        with self._lock:
            self._last_error = reason
            if self._failing_since is None:
                self._failing_since = self._clock.monotonic()
            if final or self._process is not ProcessState.SERVING:
                self._mark_failed()
                return None
            delay = self._retry.delay(failures)
            self._retry_at = self._clock.monotonic() + delay
            self._notifier.notify_all()
            return delay

    def _mark_failed(self) -> None:  # lock held
        self._state = SlotState.FAILED
        self._failed_at = self._clock.monotonic()
        self._failed_loads += 1
        self._cooldown = self._retry.cooldown(self._failed_loads)
        self._notifier.notify_all()

    def _hang(self, outcome: _Attempt[M], attempt: int, run_started: float) -> bool:
        """An attempt outlived its timeout. Python cannot stop a thread, so the slot is FAILED
        and starts no other load while that one may still finish: a second concurrent load is
        exactly what the slot exists to prevent. If it does finish, its result is taken.
        Returns True when the load ended failed."""
        timeout = self._retry.attempt_timeout_s
        reason = f"LoadTimeout: attempt {attempt} did not finish within {timeout:g}s"
        log.error("model load timed out", extra={"slot": self.name, "attempt": attempt})
        with self._lock:
            self._last_error = reason
            if self._failing_since is None:
                self._failing_since = self._clock.monotonic()
            self._hung = True
            self._mark_failed()
        outcome.wait(None)
        with self._lock:
            self._hung = False
        if outcome.error is None:
            log.warning("a timed-out load finished late", extra={"slot": self.name})
            self._settle(outcome.model, run_started)
            return False
        self._fail(outcome.error, attempt, final=True)
        return True

    def _settle(self, model: M | None, run_started: float) -> None:
        with self._lock:
            if self._process is ProcessState.STOPPED:
                self._state = SlotState.COLD
                self._notifier.notify_all()
                release_now = True
            else:
                self._model = model
                self._state = SlotState.READY
                self._failed_loads = 0
                self._cooldown = self._retry.cooldown_s
                self._failing_since = None
                self._loads_completed += 1
                self._load_seconds = self._clock.monotonic() - run_started
                if self._first_ready_at is None:
                    self._first_ready_at = self._clock.monotonic()
                self._notifier.notify_all()
                release_now = False
        if release_now:
            self._release_model(model)
            return
        log.info(
            "model ready",
            extra={"slot": self.name, "seconds": round(self._load_seconds or 0.0, 3)},
        )
        self._watch(model)

    def _watch(self, model: M | None) -> None:
        """A model that can die (a worker process) tells the slot when it does."""
        watch = getattr(model, "when_lost", None)
        if model is not None and callable(watch):
            held = model
            watch(lambda reason: self.lost(held, reason))

    def _release_model(self, model: M | None) -> None:
        if model is not None and self._release is not None:
            try:
                self._release(model)
            except Exception:  # releasing must never take the process down
                log.exception("releasing the model failed", extra={"slot": self.name})
