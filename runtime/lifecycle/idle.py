"""Idle unload: give the model's memory back after a while with nothing served.

A process that stays up (a Kubernetes pod with a floor of one replica, a shared GPU node) but
serves nothing for `THAW_IDLE_UNLOAD_S` releases the model and goes back to `cold`; the next
request loads it again. Where the platform scales to zero (Knative, KEDA, Cloud Run) the platform
does this better by removing the whole process, so it is off by default.

The unloader only looks: it is ticked from outside (an asyncio task in the service's lifespan,
a test with a fake clock) and never sleeps itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from runtime.clock import SYSTEM_CLOCK, Clock
from runtime.lifecycle.admission import AdmissionGate
from runtime.lifecycle.slot import ModelSlot
from runtime.lifecycle.states import SlotState

log = logging.getLogger("thaw.idle")


class IdleUnloader:
    """Unloads `slot` once `idle_s` seconds pass with no request accepted, running or finished.

    Activity is read from the gate: an accepted ticket, or a change in the count of released
    tickets since the last tick (a request that came and went between two ticks). The idle time
    counts from the tick that last saw activity or saw the model become ready, so the model is
    never unloaded earlier than `idle_s` after the last request ended.
    """

    def __init__(
        self,
        slot: ModelSlot[Any],
        gate: AdmissionGate,
        idle_s: float,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if idle_s <= 0:
            raise ValueError("idle_s must be > 0")
        self.slot = slot
        self.gate = gate
        self.idle_s = idle_s
        self._clock = clock
        self._busy_at = clock.monotonic()
        self._released_seen = gate.released
        self.unloads = 0
        self.unloaded = False
        """True from an idle unload until the model is ready again: the process is idle, not
        broken, and a request would load the model on demand."""

    @property
    def interval_s(self) -> float:
        """How often to tick: often enough that the unload comes at most a quarter late."""
        return min(1.0, max(0.05, self.idle_s / 4))

    def tick(self) -> bool:
        """Look once; unload if the model has been idle long enough. True when it unloaded."""
        now = self._clock.monotonic()
        released = self.gate.released
        state = self.slot.state
        if state is SlotState.READY:
            self.unloaded = False
        if state is not SlotState.READY or self.gate.accepted or released != self._released_seen:
            self._released_seen = released
            self._busy_at = now
            return False
        idle_for = now - self._busy_at
        if idle_for < self.idle_s:
            return False
        unloaded = self.slot.unload(only_if=lambda: self._still_idle(released))
        if unloaded:
            self.unloads += 1
            log.info(
                "model unloaded after idling",
                extra={"slot": self.slot.name, "idle_s": round(idle_for, 3)},
            )
        self._busy_at = now
        return unloaded

    def _still_idle(self, released: int) -> bool:
        """Checked under the slot's lock, right before the model goes: a request that slipped
        in since the tick looked is either seen here (nothing is unloaded) or demands the model
        after the unload (and loads it again). `unloaded` is set before the state turns cold,
        so readiness never sees a cold slot it does not know to be idle."""
        if self.gate.accepted or self.gate.released != released:
            return False
        self.unloaded = True
        return True

    async def watch(self) -> None:
        """Tick forever (until cancelled). The unload runs in a thread: releasing a model
        (garbage collection, handing GPU memory back) must not stall the event loop."""
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.tick)
