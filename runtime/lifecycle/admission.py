"""Admission: a concurrency limit with a bounded FIFO queue in front of the model.

Tickets are keyed by an identity the gate makes: the client's request id is only a label for
logs (many clients send the same id, and a client must not be able to replace another's place).

A request first *reserves* a place (refused with `Overloaded` when `limit + queue_size` places are
taken, with `Draining` once the gate is closed), may then wait for the model to warm up while
holding it, and finally waits for its *turn* to run. A reservation is released exactly once, in
`finally` paths or in the worker thread's completion, so a client that disconnects never leaks a
place. Thread-safe and not bound to any event loop (see `runtime.lifecycle.notify`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import deque
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import Draining, Overloaded, QueueTimeout
from runtime.lifecycle.notify import Notifier
from runtime.work import Control


@dataclass(eq=False)
class Ticket:
    """One accepted request's place in the gate.

    A ticket with a `batch_key` may be taken by the ticket whose turn came (the leader) to ride in
    its batch: it is then granted without a concurrency slot of its own, and its result comes
    through `outcome`, which the leader's run fills.
    """

    id: int
    label: str
    granted: bool = False
    released: bool = False
    waiting: bool = field(default=False)
    batch_key: Hashable | None = None
    item: Any = None
    rider: bool = False
    outcome: Future[Any] | None = None
    control: Control | None = None


class AdmissionGate:
    """At most `limit` tickets run at once; at most `queue_size` more wait."""

    def __init__(self, limit: int = 1, queue_size: int = 8) -> None:
        if limit < 1 or queue_size < 0:
            raise ValueError("limit must be >= 1 and queue_size >= 0")
        self.limit = limit
        self.queue_size = queue_size
        self._notifier = Notifier()
        self._lock = self._notifier.lock
        self._accepted: dict[int, Ticket] = {}
        self._ids = itertools.count(1)
        self._turns: deque[Ticket] = deque()
        self._running = 0
        self._riding = 0
        self._closed = False
        self._released = 0
        self._served_seconds_ewma: float | None = None

    # -- figures ---------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Requests being served now, riders in a batch included."""
        with self._lock:
            return self._running + self._riding

    @property
    def queued(self) -> int:
        """Accepted requests not running yet (waiting for the model or for their turn)."""
        with self._lock:
            return len(self._accepted) - self._running - self._riding

    @property
    def waiting_turn(self) -> int:
        """Accepted requests whose model is ready and who wait for their turn."""
        with self._lock:
            return len(self._turns)

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._accepted)

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    @property
    def released(self) -> int:
        """How many tickets were ever released: a change means some request came and went."""
        with self._lock:
            return self._released

    def accepted_labels(self) -> list[str]:
        """The labels (request ids) of the accepted tickets, for logs."""
        with self._lock:
            return [ticket.label for ticket in self._accepted.values()]

    def retry_after(self) -> float:
        """An honest guess at when a place frees up: queue length times the typical run time."""
        with self._lock:
            per_run = self._served_seconds_ewma or 1.0
            waves = (len(self._accepted) - self.limit + 1) / self.limit
            return float(max(1, math.ceil(per_run * max(1.0, waves))))

    # -- the request's path ----------------------------------------------------------------------

    def reserve(self, label: str) -> Ticket:
        """Take a place or raise `Overloaded`/`Draining` at once. `label` (the request id) is
        for logs only: equal labels are distinct tickets."""
        with self._lock:
            if self._closed:
                raise Draining("the server is shutting down", retry_after=1)
            if len(self._accepted) >= self.limit + self.queue_size:
                raise Overloaded(
                    f"queue full ({self.queue_size} waiting, {self.limit} running)",
                    retry_after=self.retry_after(),
                )
            ticket = Ticket(id=next(self._ids), label=label)
            self._accepted[ticket.id] = ticket
            return ticket

    async def wait_turn(self, ticket: Ticket, timeout: float | None) -> None:
        """Wait (FIFO) until the ticket may run. Raises `QueueTimeout` when time runs out; the
        ticket is then released."""
        with self._lock:
            ticket.waiting = True
            self._turns.append(ticket)
            self._grant()
        granted = await self._notifier.wait_for_async(lambda: ticket.granted, timeout)
        if not granted:
            self.release(ticket)
            raise QueueTimeout(
                f"waited {timeout:.0f}s in the queue without starting",
                retry_after=self.retry_after(),
            )

    def release(self, ticket: Ticket, *, served_seconds: float | None = None) -> None:
        """Give the place back (idempotent) and hand the turn to the next ticket."""
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            self._released += 1
            self._accepted.pop(ticket.id, None)
            if ticket.rider:
                self._riding -= 1
            elif ticket.granted:
                self._running -= 1
            elif ticket.waiting:
                with contextlib.suppress(ValueError):
                    self._turns.remove(ticket)
            if served_seconds is not None:
                previous = self._served_seconds_ewma
                self._served_seconds_ewma = (
                    served_seconds if previous is None else 0.7 * previous + 0.3 * served_seconds
                )
            self._grant()
            self._notifier.notify_all()

    def waiting_with(self, batch_key: Hashable) -> int:
        """How many tickets with this batch key wait for their turn."""
        with self._lock:
            return sum(1 for ticket in self._turns if ticket.batch_key == batch_key)

    def take_riders(self, leader: Ticket, most: int) -> list[Ticket]:
        """Grant up to `most` waiting tickets with the leader's batch key, oldest first, as
        riders in the leader's batch. Each gets an `outcome` future for its result."""
        if leader.batch_key is None or most <= 0:
            return []
        with self._lock:
            riders = [t for t in self._turns if t.batch_key == leader.batch_key][:most]
            for ticket in riders:
                self._turns.remove(ticket)
                ticket.rider = True
                ticket.granted = True
                ticket.outcome = Future()
                self._riding += 1
            if riders:
                self._notifier.notify_all()
            return riders

    # -- stopping ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new reservations; accepted tickets carry on."""
        with self._lock:
            self._closed = True
            self._notifier.notify_all()

    def reopen(self) -> None:
        with self._lock:
            self._closed = False

    def wait_empty(self, timeout: float | None) -> bool:
        """Block until every accepted ticket is released."""
        return self._notifier.wait_for(lambda: not self._accepted, timeout)

    async def wait_empty_async(self, timeout: float | None) -> bool:
        return await self._notifier.wait_for_async(lambda: not self._accepted, timeout)

    def _grant(self) -> None:  # lock held
        changed = False
        while self._running < self.limit and self._turns:
            ticket = self._turns.popleft()
            ticket.granted = True
            self._running += 1
            changed = True
        if changed:
            self._notifier.notify_all()
