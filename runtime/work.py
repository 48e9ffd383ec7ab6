"""The work in hand: what a running generation may ask (was it canceled?) and tell (how far it
got), wherever it runs: an inference thread of this process, or a call in the worker process.

The caller holds a `Control` per request (cancel it, listen to its progress). The code that
does the work asks `current()` for the `Work` of the thread it runs on and calls `step` after
each unit (a denoising step): progress goes to every listener, and a canceled work stops there
with `Canceled`, freeing its place within one step instead of computing an image nobody will
read. A batch's work is canceled only when every request in it is.

Each step is stamped with the wall-clock time it ended where the work ran (the worker process's
`time.time()`, carried to the parent with the step), so a listener can tell how late it heard.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from runtime.errors import Canceled

Listener = Callable[[int, int], None]


class Control:
    """One request's handle on its work: cancel it, and hear its progress (step, steps)."""

    def __init__(self) -> None:
        self._canceled = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._starters: list[Callable[[], None]] = []
        self._step_at: float | None = None

    def cancel(self) -> None:
        self._canceled.set()

    @property
    def canceled(self) -> bool:
        return self._canceled.is_set()

    def listen(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def on_start(self, starter: Callable[[], None]) -> None:
        """Call `starter()` when the work begins on the model (it left the queue)."""
        with self._lock:
            self._starters.append(starter)

    def begin(self) -> None:
        with self._lock:
            starters = list(self._starters)
        for starter in starters:
            starter()

    @property
    def step_at(self) -> float | None:
        """When the latest reported step ended (wall clock, `time.time()`), where it ran; a
        listener reads it while it hears that step."""
        return self._step_at

    def report(self, step: int, steps: int, at: float | None = None) -> None:
        with self._lock:
            self._step_at = time.time() if at is None else at
            listeners = list(self._listeners)
        for listener in listeners:
            listener(step, steps)


class Work:
    """What the code doing the work sees: the controls of the requests it serves."""

    def __init__(
        self, controls: Sequence[Control] = (), *, canceled: Callable[[], bool] | None = None
    ) -> None:
        self._controls = tuple(controls)
        self._extra_canceled = canceled

    @property
    def canceled(self) -> bool:
        if self._extra_canceled is not None and self._extra_canceled():
            return True
        return bool(self._controls) and all(control.canceled for control in self._controls)

    def begin(self) -> None:
        """The work starts on the model: tell every request."""
        for control in self._controls:
            control.begin()

    def report(self, step: int, steps: int, at: float | None = None) -> None:
        """Tell every request that `step` of `steps` ended (at `at`, wall clock; now if None)."""
        for control in self._controls:
            control.report(step, steps, at)

    def step(self, step: int, steps: int) -> None:
        """Report `step` of `steps` done; raise `Canceled` if every request gave up."""
        self.report(step, steps, time.time())
        if self.canceled:
            raise Canceled(f"canceled after step {step} of {steps}")


_local = threading.local()


def current() -> Work:
    """The work of the calling thread (a do-nothing one outside any)."""
    work: Work | None = getattr(_local, "work", None)
    return work if work is not None else Work()


@contextmanager
def running(work: Work) -> Iterator[Work]:
    """Make `work` the calling thread's work for the duration."""
    previous = getattr(_local, "work", None)
    _local.work = work
    try:
        yield work
    finally:
        _local.work = previous
