"""Download progress: bytes and files done out of a total, the rate, and what is left.

Many threads add bytes; the listener (a `/health` phase, a log line, a CLI bar) hears about it at
most every `interval_s`, plus once at the end, so reporting never slows the download.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.clock import SYSTEM_CLOCK, Clock

MB = 1_000_000


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    seconds: float

    @property
    def rate_mb_s(self) -> float:
        return self.bytes_done / MB / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.bytes_done / self.seconds if self.seconds > 0 else 0.0
        return (self.bytes_total - self.bytes_done) / rate if rate > 0 else None

    def as_detail(self) -> dict[str, Any]:
        """The figures `/health` shows under the fetch phase."""
        eta = self.eta_s
        return {
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "rate_mb_s": round(self.rate_mb_s, 1),
            "eta_s": None if eta is None else round(eta, 1),
        }


Listener = Callable[[Progress], None]


class ProgressMeter:
    """Thread-safe counters that call `listener` at most every `interval_s` seconds."""

    def __init__(
        self,
        bytes_total: int,
        files_total: int,
        listener: Listener | None = None,
        *,
        interval_s: float = 0.5,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._bytes_total = bytes_total
        self._files_total = files_total
        self._listener = listener
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._bytes = 0
        self._files = 0
        self._started = clock.monotonic()
        self._last_report = float("-inf")

    def add(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes
        self._maybe_report()

    def file_done(self) -> None:
        with self._lock:
            self._files += 1
        self._maybe_report()

    def snapshot(self) -> Progress:
        with self._lock:
            return Progress(
                bytes_done=self._bytes,
                bytes_total=self._bytes_total,
                files_done=self._files,
                files_total=self._files_total,
                seconds=self._clock.monotonic() - self._started,
            )

    def finish(self) -> Progress:
        """Report the final figures whatever the interval."""
        progress = self.snapshot()
        if self._listener is not None:
            self._listener(progress)
        return progress

    def _maybe_report(self) -> None:
        if self._listener is None:
            return
        now = self._clock.monotonic()
        with self._lock:
            if now - self._last_report < self._interval:
                return
            self._last_report = now
        self._listener(self.snapshot())
