"""The service: preload policies, the lifespan entered twice, the request path and its faults."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runtime.errors import (
    DeadlineExceeded,
    Draining,
    InferenceFailed,
    OutOfMemory,
    Overloaded,
    WarmingUp,
)
from runtime.lifecycle.service import Service
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.lifecycle.states import ProcessState, SlotState
from runtime.settings import PreloadPolicy, Settings
from tests.support.fakes import CountingLoader, FakeClock, FakeModel


def make_service(loader: CountingLoader, **overrides: object) -> Service[FakeModel]:
    settings = Settings(**{"warm_wait_s": 5.0, "request_timeout_s": 5.0, **overrides})  # type: ignore[arg-type]
    slot = ModelSlot("t", loader, release=loader.release, retry=RetryPolicy(attempts=1))
    return Service(slot, settings)


def test_background_preload_returns_at_once() -> None:
    loader = CountingLoader(delay=0.3)
    service = make_service(loader)
    started = time.monotonic()
    service.start(PreloadPolicy.BACKGROUND)
    assert time.monotonic() - started < 0.2
    assert service.slot.state is SlotState.LOADING
    service.slot.get(timeout=5)


def test_eager_preload_blocks_until_loaded_and_lazy_loads_nothing() -> None:
    eager = make_service(CountingLoader(delay=0.05))
    eager.start(PreloadPolicy.EAGER)
    assert eager.slot.state is SlotState.READY
    lazy_loader = CountingLoader()
    lazy = make_service(lazy_loader)
    lazy.start(PreloadPolicy.LAZY)
    assert lazy.slot.state is SlotState.COLD
    assert lazy_loader.calls == 0


def test_the_lifespan_entered_twice_loads_once_and_releases_on_the_last_exit() -> None:
    loader = CountingLoader(delay=0.05)
    service = make_service(loader, preload=PreloadPolicy.EAGER)

    async def scenario() -> None:
        async with service.lifespan():
            async with service.lifespan():
                assert service.slot.state is SlotState.READY
            assert service.slot.state is SlotState.READY  # one holder left: keep the model
            assert loader.released == []
        assert service.slot.process_state is ProcessState.STOPPED

    asyncio.run(scenario())
    assert loader.calls == 1
    assert len(loader.released) == 1


def test_on_lambda_leaving_the_lifespan_keeps_the_model() -> None:
    loader = CountingLoader()
    service = make_service(loader, preload=PreloadPolicy.EAGER, on_lambda=True)

    async def invocation() -> None:
        async with service.lifespan():
            pass

    for _ in range(3):  # Mangum would run the lifespan around each invocation
        asyncio.run(invocation())
    assert loader.calls == 1
    assert loader.released == []
    assert service.slot.state is SlotState.READY


def test_run_executes_work_off_the_loop_and_reports_timings() -> None:
    loader = CountingLoader()
    service = make_service(loader)
    loop_thread = threading.get_ident()

    def work(model: FakeModel) -> tuple[int, int]:
        return model.number, threading.get_ident()

    served = asyncio.run(service.run(work))
    number, thread = served.value
    assert number == 1
    assert thread != loop_thread
    assert served.cold
    assert served.queue_s >= 0
    assert service.gate.accepted == 0


def test_a_request_waiting_past_the_warm_budget_gets_warming_up() -> None:
    gate = threading.Event()
    service = make_service(CountingLoader(gate=gate), warm_wait_s=0.05)
    with pytest.raises(WarmingUp):
        asyncio.run(service.run(lambda model: model))
    assert service.gate.accepted == 0
    gate.set()


def test_an_out_of_memory_fails_that_request_only_and_may_be_retried() -> None:
    service = make_service(CountingLoader())

    def boom(_model: FakeModel) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemory, match="out of memory") as raised:
        asyncio.run(service.run(boom))
    assert raised.value.retry_after is not None
    assert service.slot.state is SlotState.READY
    assert asyncio.run(service.run(lambda model: model.number)).value == 1
    assert service.health()["inference_errors"] == 1


def test_a_failing_generation_is_not_retryable_and_its_text_stays_out_of_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pipeline error other than out-of-memory would fail again: 500, no Retry-After (a 503
    with Retry-After invited a retry storm). Its text may quote the prompt: not logged."""
    service = make_service(CountingLoader())

    def boom(_model: FakeModel) -> None:
        raise ValueError("cannot draw 'my secret prompt'")

    with pytest.raises(InferenceFailed, match="secret") as raised:
        asyncio.run(service.run(boom, request_id="r-7"))
    assert raised.value.retry_after is None
    (record,) = [r for r in caplog.records if r.getMessage() == "inference failed"]
    assert record.__dict__["error_type"] == "ValueError"
    assert record.__dict__["request_id"] == "r-7"
    assert "secret" not in str([r.__dict__ for r in caplog.records])
    assert service.slot.state is SlotState.READY


def test_a_deadline_gives_up_waiting_but_holds_the_place_until_the_thread_ends() -> None:
    service = make_service(CountingLoader(), request_timeout_s=0.05)
    release = threading.Event()
    with pytest.raises(DeadlineExceeded):
        asyncio.run(service.run(lambda model: release.wait(5)))
    assert service.gate.accepted == 1  # the thread still runs
    release.set()
    assert service.gate.wait_empty(timeout=5)


def test_overload_and_drain_refusals() -> None:
    service = make_service(CountingLoader(), max_concurrency=1, queue_size=0)
    hold = threading.Event()

    async def scenario() -> None:
        first = asyncio.ensure_future(service.run(lambda m: hold.wait(5)))
        await asyncio.sleep(0.1)
        with pytest.raises(Overloaded):
            await service.run(lambda m: None)
        service.refuse_new()
        hold.set()
        await first
        with pytest.raises(Draining):
            await service.run(lambda m: None)

    asyncio.run(scenario())


def test_health_reports_the_state() -> None:
    service = make_service(CountingLoader())
    report = service.health()
    assert report["status"] == "cold"
    service.slot.get(timeout=5)
    report = service.health()
    assert report["status"] == "ready"
    assert report["load_attempts"] == 1
    assert [p["name"] for p in report["phases"]] == ["import", "build"]
    assert report["cold_start"]["ready_after_s"] is not None


def test_health_places_the_load_on_the_process_timeline() -> None:
    clock = FakeClock()
    loader = CountingLoader()
    slot = ModelSlot("t", loader, retry=RetryPolicy(attempts=1), clock=clock)
    service = Service(slot, Settings(), clock=clock)
    assert service.health()["load_started_s"] is None  # no attempt yet
    clock.advance(2.5)  # the load starts 2.5 s after the process
    slot.get(timeout=5)
    assert service.health()["load_started_s"] == 2.5
