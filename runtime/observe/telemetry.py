"""Counters and histograms the runtime keeps for operators, cheap to record.

Recording is plain Python under a lock, so nothing heavy is imported at start (prometheus-client
alone costs ~130 ms of import here, which would show in the time to first `/livez`). Exporters
read a `TelemetrySnapshot`: the Prometheus endpoint converts it when scraped, and on Lambda the
same figures go out as CloudWatch Embedded Metric Format log lines.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field

# Seconds: from a fast probe to a long generation on a CPU.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip


@dataclass
class Histogram:
    """Cumulative-bucket histogram in the Prometheus sense."""

    buckets: tuple[float, ...] = BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, cumulative count) pairs, ending with +Inf."""
        running = 0
        out = []
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out

    def copy(self) -> Histogram:
        return Histogram(self.buckets, list(self.counts), self.total, self.count)


@dataclass(frozen=True)
class TelemetrySnapshot:
    requests: dict[tuple[str, str, int], int]
    request_seconds: Histogram
    queue_seconds: Histogram
    inference_seconds: Histogram
    cold_requests: int


class Telemetry:
    """Thread-safe recording of request outcomes and where their time went."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._request_seconds = Histogram()
        self._queue_seconds = Histogram()
        self._inference_seconds = Histogram()
        self._cold_requests = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            self._request_seconds.observe(seconds)

    def observe_served(self, queue_s: float, run_s: float, *, cold: bool) -> None:
        with self._lock:
            self._queue_seconds.observe(queue_s)
            self._inference_seconds.observe(run_s)
            if cold:
                self._cold_requests += 1

    def snapshot(self) -> TelemetrySnapshot:
        with self._lock:
            return TelemetrySnapshot(
                requests=dict(self._requests),
                request_seconds=self._request_seconds.copy(),
                queue_seconds=self._queue_seconds.copy(),
                inference_seconds=self._inference_seconds.copy(),
                cold_requests=self._cold_requests,
            )
