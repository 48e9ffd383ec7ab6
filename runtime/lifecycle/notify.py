"""A thread-safe "something changed" signal that sync code and any event loop can wait on.

The slot and the admission gate change state from worker threads (a load finishing, an inference
ending) while waiters sit in plain threads (Lambda INIT, a CLI) or in coroutines. asyncio's own
primitives bind to one loop and are not thread-safe, and Mangum drives its own reused loop, so
waiters here register a future on *their* running loop and are woken with `call_soon_threadsafe`.
Waiters always re-check their condition after waking: a wake-up is a hint, not a promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Notifier:
    """Broadcast state changes made under `lock` to sync and async waiters."""

    def __init__(self, lock: threading.RLock | None = None) -> None:
        self.lock = lock if lock is not None else threading.RLock()
        self._condition = threading.Condition(self.lock)
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def notify_all(self) -> None:
        """Wake every waiter. The caller holds `lock`."""
        self._condition.notify_all()
        waiters, self._async_waiters = self._async_waiters, set()
        for loop, future in waiters:
            # A closed loop has nobody left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, future)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block this thread until `predicate()` holds (checked under the lock) or time runs out."""
        with self.lock:
            return self._condition.wait_for(predicate, timeout)

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait without blocking the running loop until `predicate()` holds or time runs out."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate():
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                future: asyncio.Future[None] = loop.create_future()
                entry = (loop, future)
                self._async_waiters.add(entry)
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                pass
            finally:
                with self.lock:
                    self._async_waiters.discard(entry)
