"""Load phases: what a cold start spent its time on, reported in `/health` and the logs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from runtime.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("thaw.load")


@dataclass
class _Phase:
    name: str
    started: float
    seconds: float | None = None
    failed: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


class PhaseRecorder:
    """Records named phases of one load attempt. Thread-safe: phases may overlap
    (a download running while heavy imports happen)."""

    def __init__(
        self, clock: Clock = SYSTEM_CLOCK, *, logs: bool = True, origin: float | None = None
    ) -> None:
        self._clock = clock
        self._logs = logs  # False where another recorder logs the same phases (a worker's)
        self._origin = clock.monotonic() if origin is None else origin
        self._lock = threading.Lock()
        self._phases: list[_Phase] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body as phase `name`; a raising body marks the phase failed."""
        token = self.begin(name)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            self.end(token, failed=failed)

    def begin(self, name: str, *, at: float | None = None) -> object:
        """Start phase `name` by hand (a phase reported by another process); end it with `end`.

        `at` is when it really started, on this recorder's clock: another process's
        `time.monotonic()` on the same host is one (Linux has one CLOCK_MONOTONIC per boot)."""
        entry = _Phase(name=name, started=self._clock.monotonic() if at is None else at)
        with self._lock:
            self._phases.append(entry)
        if self._logs:
            log.info("load phase started", extra={"phase": name})
        return entry

    def end(self, token: object, *, failed: bool = False, at: float | None = None) -> None:
        if not isinstance(token, _Phase):
            raise TypeError(f"not a token from PhaseRecorder.begin: {token!r}")
        with self._lock:
            token.failed = failed
            token.seconds = (self._clock.monotonic() if at is None else at) - token.started
        if not self._logs:
            return
        log.info(
            "load phase %s",
            "failed" if failed else "done",
            extra={"phase": token.name, "seconds": round(token.seconds, 3)},
        )

    def progress(self, name: str, **detail: Any) -> None:
        """Attach progress figures (bytes done, rate...) to the phase `name`."""
        with self._lock:
            for entry in reversed(self._phases):
                if entry.name == name:
                    entry.detail.update(detail)
                    return

    @property
    def origin(self) -> float:
        """The moment (on this recorder's clock) that the phases' `start_s` count from."""
        return self._origin

    def snapshot(self) -> list[dict[str, Any]]:
        """Phases in start order: name, start offset, seconds (None while running), state."""
        with self._lock:
            return [
                {
                    "name": p.name,
                    "start_s": round(p.started - self._origin, 4),
                    "seconds": None if p.seconds is None else round(p.seconds, 4),
                    "state": "failed" if p.failed else ("running" if p.seconds is None else "done"),
                    **({"detail": dict(p.detail)} if p.detail else {}),
                }
                for p in self._phases
            ]
