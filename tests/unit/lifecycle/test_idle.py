"""Idle unload, driven by a fake clock: when the model is given back, and when it is not."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runtime.lifecycle.idle import IdleUnloader
from runtime.lifecycle.service import Service
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.lifecycle.states import SlotState
from runtime.settings import Settings
from tests.support.fakes import CountingLoader, FakeClock, FakeModel

IDLE_S = 60.0


def make(clock: FakeClock) -> tuple[Service[FakeModel], IdleUnloader, CountingLoader]:
    loader = CountingLoader()
    slot = ModelSlot("t", loader, release=loader.release, retry=RetryPolicy(attempts=1))
    settings = Settings(idle_unload_s=IDLE_S, warm_wait_s=5.0, request_timeout_s=5.0)
    service = Service(slot, settings, clock=clock)
    assert service.idle is not None
    slot.get(timeout=5)
    service.idle.tick()  # sees the model ready: the idle time counts from here
    return service, service.idle, loader


def test_the_model_is_released_after_the_idle_time_and_not_before() -> None:
    clock = FakeClock()
    service, idle, loader = make(clock)
    clock.advance(IDLE_S - 1)
    assert not idle.tick()
    assert service.slot.state is SlotState.READY
    clock.advance(1)
    assert idle.tick()
    assert service.slot.state is SlotState.COLD
    assert loader.released == [FakeModel(1, released=True)]
    assert idle.unloads == 1


def test_a_request_that_came_and_went_between_ticks_restarts_the_idle_time() -> None:
    clock = FakeClock()
    service, idle, _ = make(clock)
    clock.advance(IDLE_S - 5)
    ticket = service.gate.reserve("r1")  # a request arrives and ends between two ticks
    service.gate.release(ticket)
    clock.advance(5)
    assert not idle.tick()  # the release was seen: idle counts from this tick
    clock.advance(IDLE_S - 1)
    assert not idle.tick()
    clock.advance(1)
    assert idle.tick()


def test_an_accepted_request_keeps_the_model_however_long_it_runs() -> None:
    clock = FakeClock()
    service, idle, _ = make(clock)
    ticket = service.gate.reserve("long")
    for _ in range(5):
        clock.advance(IDLE_S)
        assert not idle.tick()
    service.gate.release(ticket)
    clock.advance(IDLE_S)
    assert not idle.tick()  # the release restarts the idle time
    clock.advance(IDLE_S)
    assert idle.tick()


def test_a_request_that_slips_in_during_the_unload_check_keeps_the_model() -> None:
    clock = FakeClock()
    service, idle, _ = make(clock)
    clock.advance(IDLE_S)
    gate = service.gate
    real_unload = service.slot.unload

    def unload_after_a_reservation(**kwargs: object) -> bool:
        gate.reserve("late")  # between the tick's look and the unload under the slot's lock
        return real_unload(**kwargs)  # type: ignore[arg-type]

    service.slot.unload = unload_after_a_reservation  # type: ignore[method-assign]
    assert not idle.tick()
    assert service.slot.state is SlotState.READY


def test_nothing_is_unloaded_while_draining() -> None:
    clock = FakeClock()
    service, idle, _ = make(clock)
    service.slot.close()
    clock.advance(IDLE_S * 2)
    assert not idle.tick()
    assert service.slot.peek() is not None


def test_after_an_idle_unload_the_service_stays_ready_and_reloads_on_demand() -> None:
    clock = FakeClock()
    service, idle, loader = make(clock)
    clock.advance(IDLE_S)
    assert idle.tick()
    assert service.accepting  # idle, not broken: readiness holds
    served = asyncio.run(service.run(lambda model: model.number))
    assert served.value == 2  # a second load
    assert served.cold
    assert loader.calls == 2
    assert service.health()["loads_completed"] == 2
    idle.tick()
    assert not idle.unloaded


def test_a_failed_reload_is_not_ready() -> None:
    clock = FakeClock()
    service, idle, loader = make(clock)
    clock.advance(IDLE_S)
    assert idle.tick()
    loader.failures = 5
    service.slot.start()
    service.slot.wait_settled(timeout=5)
    assert service.slot.state is SlotState.FAILED
    assert not service.accepting


def test_off_by_default_and_the_lifespan_runs_the_watch() -> None:
    assert Settings().idle_unload_s == 0
    plain = Service(ModelSlot("t", CountingLoader()), Settings())
    assert plain.idle is None
    with pytest.raises(ValueError, match="idle_s"):
        IdleUnloader(plain.slot, plain.gate, 0)

    loader = CountingLoader()
    slot = ModelSlot("t", loader, release=loader.release)
    service = Service(slot, Settings(idle_unload_s=0.2, drain_timeout_s=1.0))
    unloaded = threading.Event()

    async def scenario() -> None:
        async with service.lifespan():
            await slot.aget(timeout=5)
            for _ in range(100):
                if slot.state is SlotState.COLD:
                    unloaded.set()
                    break
                await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert unloaded.is_set()
    assert len(loader.released) == 1
