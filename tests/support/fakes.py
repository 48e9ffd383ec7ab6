"""Fakes for unit tests: a clock tests drive by hand, and a loader that counts its calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.observe.phases import PhaseRecorder


class FakeClock:
    """Monotonic time that moves only when told; `sleep` advances it at once and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclass
class FakeModel:
    number: int
    released: bool = False


@dataclass
class CountingLoader:
    """Loads a `FakeModel`; fails the first `failures` calls; each call takes `delay` seconds."""

    delay: float = 0.0
    failures: int = 0
    calls: int = 0
    concurrent: int = 0
    max_concurrent: int = 0
    released: list[FakeModel] = field(default_factory=list)
    gate: threading.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, phases: PhaseRecorder) -> FakeModel:
        with self._lock:
            self.calls += 1
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            number = self.calls
        try:
            with phases.phase("import"):
                if self.gate is not None:
                    self.gate.wait(10)
                time.sleep(self.delay)
            with phases.phase("build"):
                if number <= self.failures:
                    raise OSError(f"weights unreadable (call {number})")
            return FakeModel(number)
        finally:
            with self._lock:
                self.concurrent -= 1

    def release(self, model: FakeModel) -> None:
        model.released = True
        self.released.append(model)


def run_threads(count: int, target: Callable[[], object]) -> list[object]:
    """Run `target` in `count` threads started together; return results (or exceptions)."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def runner(index: int) -> None:
        barrier.wait()
        try:
            results[index] = target()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results
