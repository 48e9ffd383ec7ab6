"""The model slot: single flight, retries with backoff, failure and recovery, unload, stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from runtime.errors import Draining, LoadFailed, WarmingUp
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.lifecycle.states import ProcessState, SlotState
from tests.support.fakes import CountingLoader, FakeClock, FakeModel, run_threads


def make_slot(
    loader: CountingLoader, clock: FakeClock | None = None, **retry: float
) -> ModelSlot[FakeModel]:
    policy = RetryPolicy(**retry) if retry else RetryPolicy(attempts=3, backoff_s=1, cooldown_s=30)
    kwargs = {"clock": clock} if clock is not None else {}
    return ModelSlot("test", loader, release=loader.release, retry=policy, **kwargs)


def test_a_new_slot_is_cold_and_loads_nothing() -> None:
    loader = CountingLoader()
    slot = make_slot(loader)
    assert slot.state is SlotState.COLD
    assert slot.peek() is None
    assert loader.calls == 0


def test_fifty_threads_asking_at_once_share_one_load() -> None:
    loader = CountingLoader(delay=0.2)
    slot = make_slot(loader)
    results = run_threads(50, lambda: slot.get(timeout=10))
    assert loader.calls == 1
    assert loader.max_concurrent == 1
    assert all(result is results[0] for result in results)
    assert slot.snapshot().load_attempts == 1


def test_fifty_coroutines_and_threads_together_share_one_load() -> None:
    loader = CountingLoader(delay=0.2)
    slot = make_slot(loader)

    async def many() -> list[FakeModel]:
        return list(await asyncio.gather(*(slot.aget(timeout=10) for _ in range(25))))

    from_threads = []
    worker = threading.Thread(target=lambda: from_threads.extend(run_threads(25, slot.get)))
    worker.start()
    from_loop = asyncio.run(many())
    worker.join(10)
    assert loader.calls == 1
    assert {id(m) for m in from_loop + from_threads} == {id(from_loop[0])}


def test_async_waiters_do_not_block_the_event_loop() -> None:
    gate = threading.Event()
    loader = CountingLoader(gate=gate)
    slot = make_slot(loader)

    async def scenario() -> int:
        ticks = 0
        waiter = asyncio.ensure_future(slot.aget(timeout=10))
        for _ in range(10):  # the loop keeps running while the load is held back
            await asyncio.sleep(0.01)
            ticks += 1
        assert not waiter.done()
        gate.set()
        await waiter
        return ticks

    assert asyncio.run(scenario()) == 10


def test_failures_retry_with_exponential_backoff_then_succeed() -> None:
    clock = FakeClock()
    loader = CountingLoader(failures=2)
    slot = make_slot(loader, clock, attempts=3, backoff_s=1, backoff_max_s=30, cooldown_s=30)
    model = slot.get(timeout=10)
    assert model.number == 3
    assert clock.sleeps == [1, 2]
    snap = slot.snapshot()
    assert snap.state is SlotState.READY
    assert snap.load_attempts == 3
    assert snap.last_error == "OSError: weights unreadable (call 2)"


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(attempts=10, backoff_s=1, backoff_max_s=5)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_exhausted_retries_leave_the_slot_failed_with_the_reason() -> None:
    clock = FakeClock()
    loader = CountingLoader(failures=100)
    slot = make_slot(loader, clock, attempts=2, backoff_s=1, cooldown_s=30)
    with pytest.raises(LoadFailed) as raised:
        slot.get(timeout=10)
    assert raised.value.reason == "OSError: weights unreadable (call 2)"
    assert raised.value.retry_after == 30
    assert slot.state is SlotState.FAILED
    assert slot.snapshot().phases[-1] == {
        "name": "build",
        "start_s": 0.0,
        "seconds": 0.0,
        "state": "failed",
    }


def test_a_failed_slot_refuses_during_the_cooldown_and_recovers_after() -> None:
    clock = FakeClock()
    loader = CountingLoader(failures=2)
    slot = make_slot(loader, clock, attempts=2, backoff_s=1, cooldown_s=30)
    with pytest.raises(LoadFailed):
        slot.get(timeout=10)
    clock.advance(10)
    with pytest.raises(LoadFailed) as raised:
        slot.get(timeout=10)
    assert raised.value.retry_after == 20
    assert loader.calls == 2  # no new attempt inside the cool-down
    assert slot.start() is False
    clock.advance(21)
    model = slot.get(timeout=10)
    assert model.number == 3
    assert slot.state is SlotState.READY


def test_a_short_wait_raises_warming_up_and_the_load_goes_on() -> None:
    gate = threading.Event()
    loader = CountingLoader(gate=gate)
    slot = make_slot(loader)
    with pytest.raises(WarmingUp) as raised:
        slot.get(timeout=0.05)
    assert raised.value.retry_after is not None
    assert slot.state is SlotState.LOADING
    gate.set()
    assert slot.get(timeout=10).number == 1
    assert loader.calls == 1


def test_start_is_idempotent() -> None:
    loader = CountingLoader(delay=0.05)
    slot = make_slot(loader)
    assert slot.start() is True
    assert slot.start() is False
    slot.get(timeout=10)
    assert slot.start() is False
    assert loader.calls == 1


def test_unload_releases_the_model_and_the_next_demand_loads_again() -> None:
    loader = CountingLoader()
    slot = make_slot(loader)
    first = slot.get(timeout=10)
    assert slot.unload() is True
    assert first.released
    assert slot.state is SlotState.COLD
    second = slot.get(timeout=10)
    assert second.number == 2
    assert slot.snapshot().loads_completed == 2


def test_draining_keeps_the_model_for_accepted_work_but_starts_no_load() -> None:
    loader = CountingLoader()
    slot = make_slot(loader)
    model = slot.get(timeout=10)
    slot.close()
    assert slot.process_state is ProcessState.DRAINING
    assert slot.get(timeout=1) is model
    assert not slot.ready
    cold = make_slot(CountingLoader())
    cold.close()
    with pytest.raises(Draining):
        cold.get(timeout=1)


def test_stop_releases_the_model_and_refuses_afterwards() -> None:
    loader = CountingLoader()
    slot = make_slot(loader)
    model = slot.get(timeout=10)
    slot.stop()
    assert model.released
    assert slot.process_state is ProcessState.STOPPED
    with pytest.raises(Draining):
        slot.get(timeout=1)


def eventually(condition: Callable[[], bool], timeout: float = 10) -> bool:
    """Poll `condition` (set by another thread) until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_load_finishing_after_stop_is_released_at_once() -> None:
    gate = threading.Event()
    loader = CountingLoader(gate=gate)
    slot = make_slot(loader)
    slot.start()
    slot.stop()
    gate.set()
    assert slot.wait_settled(timeout=10)
    # The release runs just after the state settles, outside the slot's lock.
    assert eventually(lambda: len(loader.released) == 1)
    assert slot.peek() is None


def test_rebinding_a_loaded_slot_is_refused() -> None:
    loader = CountingLoader()
    slot = make_slot(loader)
    slot.get(timeout=10)
    with pytest.raises(RuntimeError, match="cannot rebind"):
        slot.bind(loader)


def test_a_hung_load_times_out_to_failed_and_blocks_a_second_load() -> None:
    gate = threading.Event()
    loader = CountingLoader(gate=gate)
    slot = ModelSlot(
        "t",
        loader,
        retry=RetryPolicy(attempts=3, cooldown_s=0, attempt_timeout_s=0.1),
    )
    with pytest.raises(LoadFailed, match=r"did not finish within 0\.1s"):
        slot.get(timeout=5)
    assert slot.state is SlotState.FAILED
    # Even with no cool-down, no second load starts while the first may still finish.
    assert slot.start() is False
    with pytest.raises(LoadFailed):
        slot.get(timeout=1)
    assert loader.calls == 1
    gate.set()  # the hung load finishes late: its model is taken, not wasted
    assert slot.wait_settled(timeout=5)
    assert eventually(lambda: slot.ready)
    assert slot.get(timeout=1).number == 1
    assert loader.calls == 1


class DyingModel(FakeModel):
    """A model that can die, as a worker process can: it tells its watcher when it does."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.watchers: list[Callable[[str], None]] = []

    def when_lost(self, callback: Callable[[str], None]) -> None:
        self.watchers.append(callback)

    def die(self, reason: str = "the model worker exited (signal 9)") -> None:
        for watcher in self.watchers:
            watcher(reason)


def test_a_lost_model_is_released_and_a_fresh_one_loads_with_no_demand() -> None:
    numbers = iter(range(1, 10))
    released: list[DyingModel] = []
    slot: ModelSlot[DyingModel] = ModelSlot(
        "t", lambda _phases: DyingModel(next(numbers)), release=released.append
    )
    first = slot.get(timeout=10)
    first.die()
    assert slot.wait_settled(10)
    assert slot.state is SlotState.READY  # reloaded by itself
    second = slot.peek()
    assert second is not None
    assert second.number == 2
    assert released == [first]
    snap = slot.snapshot()
    assert snap.lost == 1
    assert "signal 9" in (snap.last_error or "")
    first.die()  # a late report about the old model lets go of nothing
    assert slot.peek() is second


def test_a_new_load_waits_for_the_release_of_the_previous_model() -> None:
    """Two models in memory at once is a GPU out-of-memory: a demand during a slow release
    starts its load only once the release is done."""
    loader = CountingLoader()
    releasing = threading.Event()
    finish = threading.Event()
    overlap: list[int] = []

    def slow_release(model: FakeModel) -> None:
        releasing.set()
        finish.wait(10)
        overlap.append(loader.calls)

    slot = ModelSlot("t", loader, release=slow_release)
    slot.get(timeout=10)
    unloading = threading.Thread(target=slot.unload)
    unloading.start()
    assert releasing.wait(10)
    assert slot.state is SlotState.RELEASING
    assert slot.snapshot().status == "releasing"
    getter = threading.Thread(target=lambda: slot.get(timeout=10))
    getter.start()
    time.sleep(0.1)
    assert loader.calls == 1  # the demand waits: no second load while the first model lives
    finish.set()
    unloading.join(10)
    getter.join(10)
    assert overlap == [1]
    assert loader.calls == 2
    assert slot.state is SlotState.READY


def test_a_failed_load_retries_by_itself_with_a_growing_cool_down() -> None:
    loader = CountingLoader(failures=2)
    slot = make_slot(loader, attempts=1, cooldown_s=0.05, cooldown_max_s=0.08)
    slot.start()
    assert wait_until(lambda: slot.state is SlotState.READY, timeout=10)
    assert loader.calls == 3  # two failed loads, each retried with no demand
    assert slot.snapshot().failing_s is None


def test_the_time_failing_counts_from_the_first_failure_until_a_load_succeeds() -> None:
    clock = FakeClock()
    loader = CountingLoader(failures=5)
    slot = make_slot(loader, clock, attempts=1, cooldown_s=30)
    slot.start()
    assert slot.wait_settled(10)
    clock.advance(45)
    snap = slot.snapshot()
    assert snap.state is SlotState.FAILED
    assert snap.failing_s == 45
    assert snap.retry_in_s == 0  # the cool-down (30 s) is over: the next demand loads


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False
