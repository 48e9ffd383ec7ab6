"""Micro-batching in the service: who joins whose batch, results to the right request, no leaks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable

import pytest

from runtime.errors import InferenceFailed
from runtime.lifecycle.service import Served, Service
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.settings import Settings
from tests.support.fakes import CountingLoader, FakeModel


class Recorder:
    """A batch function that records each call's items; calls are held until released."""

    def __init__(self, *, hold: bool = True, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self._open = not hold
        self._holds: dict[int, threading.Event] = {}
        self._changed = threading.Condition()

    def _hold(self, index: int) -> threading.Event:  # lock held
        event = self._holds.setdefault(index, threading.Event())
        if self._open:
            event.set()
        return event

    def release(self, index: int) -> None:
        with self._changed:
            self._hold(index).set()

    def release_all(self) -> None:
        with self._changed:
            self._open = True
            for event in self._holds.values():
                event.set()

    def wait_started(self, calls: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.calls) >= calls, 5)

    def __call__(self, model: FakeModel, items: list[str]) -> list[str]:
        with self._changed:
            hold = self._hold(len(self.calls))
            self.calls.append(list(items))
            self._changed.notify_all()
        assert hold.wait(5)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"boom on {self.fail_on}")
        return [f"{item}@{model.number}" for item in items]


def make_service(**overrides: object) -> Service[FakeModel]:
    settings = Settings(**{"warm_wait_s": 5.0, "request_timeout_s": 5.0, **overrides})  # type: ignore[arg-type]
    loader = CountingLoader()
    slot = ModelSlot("t", loader, release=loader.release, retry=RetryPolicy(attempts=1))
    service = Service(slot, settings)
    service.start()
    slot.get(timeout=5)
    return service


async def submit(
    service: Service[FakeModel], recorder: Recorder, item: str, key: Hashable | None
) -> Served[str]:
    return await service.run_item(item, batch=recorder, key=key, request_id=item)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def burst(
    service: Service[FakeModel], recorder: Recorder, jobs: list[tuple[str, Hashable | None]]
) -> list[Served[str] | BaseException]:
    """The first job starts and holds the model; the rest queue behind it, then all finish."""
    first = asyncio.ensure_future(submit(service, recorder, *jobs[0]))
    await asyncio.to_thread(recorder.wait_started, 1)
    rest = [asyncio.ensure_future(submit(service, recorder, *job)) for job in jobs[1:]]
    await until(lambda: service.gate.waiting_turn == len(rest))
    recorder.release_all()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_queued_requests_with_one_key_share_a_call_and_get_their_own_results() -> None:
    service = make_service(max_batch=4)
    recorder = Recorder()
    jobs: list[tuple[str, Hashable | None]] = [(f"p{i}", "64px") for i in range(5)]
    results = asyncio.run(burst(service, recorder, jobs))
    assert recorder.calls == [["p0"], ["p1", "p2", "p3", "p4"]]
    values = [r.value for r in results if isinstance(r, Served)]
    assert values == [f"p{i}@1" for i in range(5)]
    assert [r.batch_size for r in results if isinstance(r, Served)] == [1, 4, 4, 4, 4]
    assert service.gate.accepted == 0
    assert service.gate.running == 0
    assert service.health()["served"] == 5


def test_a_batch_never_exceeds_max_batch_nor_mixes_keys() -> None:
    service = make_service(max_batch=2, queue_size=8)
    recorder = Recorder()
    jobs: list[tuple[str, Hashable | None]] = [
        ("a0", "a"),
        ("a1", "a"),
        ("b1", "b"),
        ("a2", "a"),
        ("a3", "a"),
        ("b2", "b"),
    ]
    results = asyncio.run(burst(service, recorder, jobs))
    assert all(isinstance(r, Served) for r in results)
    assert recorder.calls == [["a0"], ["a1", "a2"], ["b1", "b2"], ["a3"]]
    assert service.gate.accepted == 0


@pytest.mark.parametrize("max_batch", [1, 4])
def test_no_key_or_batching_off_means_one_call_per_request(max_batch: int) -> None:
    service = make_service(max_batch=max_batch)
    recorder = Recorder()
    keyed: Hashable | None = None if max_batch > 1 else "same"
    jobs: list[tuple[str, Hashable | None]] = [(f"p{i}", keyed) for i in range(3)]
    asyncio.run(burst(service, recorder, jobs))
    assert recorder.calls == [["p0"], ["p1"], ["p2"]]


def test_a_failed_batch_fails_each_member_and_frees_every_place() -> None:
    service = make_service(max_batch=4)
    recorder = Recorder(fail_on="p2")
    jobs: list[tuple[str, Hashable | None]] = [(f"p{i}", "k") for i in range(4)]
    results = asyncio.run(burst(service, recorder, jobs))
    assert isinstance(results[0], Served)
    assert all(isinstance(r, InferenceFailed) for r in results[1:])
    assert service.gate.accepted == 0
    assert service.health()["inference_errors"] == 3
    # The model stays ready and the next request is served.
    recorder = Recorder(hold=False)
    served = asyncio.run(submit(service, recorder, "again", "k"))
    assert served.value == "again@1"


def test_a_rider_that_disconnects_keeps_its_place_until_the_batch_ends() -> None:
    service = make_service(max_batch=4)
    recorder = Recorder()

    async def scenario() -> None:
        first = asyncio.ensure_future(submit(service, recorder, "p0", "k"))
        await asyncio.to_thread(recorder.wait_started, 1)
        second = asyncio.ensure_future(submit(service, recorder, "p1", "k"))
        third = asyncio.ensure_future(submit(service, recorder, "p2", "k"))
        await until(lambda: service.gate.waiting_turn == 2)
        recorder.release(0)  # the first call ends; p1 leads, p2 rides
        await first
        await asyncio.to_thread(recorder.wait_started, 2)
        third.cancel()  # the rider's client goes away mid-batch
        await asyncio.gather(third, return_exceptions=True)
        assert service.gate.accepted == 2  # its place is held while the batch still runs
        recorder.release(1)
        await second
        assert service.gate.accepted == 0

    asyncio.run(scenario())
    assert recorder.calls == [["p0"], ["p1", "p2"]]


def test_the_leader_waits_the_window_for_companions() -> None:
    service = make_service(max_batch=2, batch_window_ms=1000)  # wide: a busy CI machine stalls
    recorder = Recorder(hold=False)

    async def scenario() -> list[Served[str]]:
        first = asyncio.ensure_future(submit(service, recorder, "p0", "k"))
        await asyncio.sleep(0.05)  # inside p0's window
        second = asyncio.ensure_future(submit(service, recorder, "p1", "k"))
        return list(await asyncio.gather(first, second))

    results = asyncio.run(scenario())
    assert recorder.calls == [["p0", "p1"]]
    assert [r.value for r in results] == ["p0@1", "p1@1"]
