"""The drain's order and deadline, on a service with a fake model (no server, no torch)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runtime.errors import Draining
from runtime.lifecycle.drain import EXIT_CUT_OFF, Drain
from runtime.lifecycle.service import Service
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.lifecycle.states import ProcessState
from runtime.settings import Settings, SettingsError
from tests.support.fakes import CountingLoader, FakeModel


def make_service(**overrides: object) -> Service[FakeModel]:
    settings = Settings(**{"warm_wait_s": 5.0, "request_timeout_s": 30.0, **overrides})  # type: ignore[arg-type]
    loader = CountingLoader()
    slot = ModelSlot("t", loader, release=loader.release, retry=RetryPolicy(attempts=1))
    slot.get(timeout=5)
    return Service(slot, settings)


def held(gate: threading.Event) -> object:
    gate.wait(10)
    return "done"


def test_readiness_fails_at_once_and_accepted_work_finishes() -> None:
    service = make_service(max_concurrency=1, queue_size=4)
    release = threading.Event()
    drain = Drain(service, delay_s=0, timeout_s=10)

    async def scenario() -> None:
        running = asyncio.ensure_future(service.run(lambda m: held(release)))
        queued = [asyncio.ensure_future(service.run(lambda m: "q")) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert (service.gate.running, service.gate.queued) == (1, 2)
        stopping = asyncio.ensure_future(drain.run("SIGTERM"))
        await asyncio.sleep(0.05)
        assert service.slot.process_state is ProcessState.DRAINING
        assert not service.accepting
        with pytest.raises(Draining):
            await service.run(lambda m: "new")
        assert not stopping.done()  # accepted work is still there
        release.set()
        assert (await running).value == "done"
        results = [served.value for served in await asyncio.gather(*queued)]
        assert results == ["q", "q"]
        report = await stopping
        assert report.clean
        assert report.exit_code == 0
        assert report.reason == "SIGTERM"

    asyncio.run(scenario())
    assert service.gate.accepted == 0


def test_during_the_delay_new_requests_are_still_served() -> None:
    service = make_service()
    drain = Drain(service, delay_s=1.0, timeout_s=5)

    async def scenario() -> None:
        stopping = asyncio.ensure_future(drain.run("SIGTERM"))
        await asyncio.sleep(0.05)
        assert not service.accepting  # readiness already fails
        served = await service.run(lambda m: "in the delay")
        assert served.value == "in the delay"
        for _ in range(500):  # until the delay ends and the gate closes
            if service.gate.closed:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(Draining):
            await service.run(lambda m: "after")
        report = await stopping
        assert report.clean
        assert report.seconds >= 1.0

    asyncio.run(scenario())


def test_the_deadline_answers_accepted_requests_draining_and_names_them() -> None:
    service = make_service(max_concurrency=1, queue_size=4)
    release = threading.Event()
    drain = Drain(service, delay_s=0, timeout_s=0.3)

    async def scenario() -> None:
        running = asyncio.ensure_future(service.run(lambda m: held(release), request_id="a"))
        queued = asyncio.ensure_future(service.run(lambda m: "q", request_id="b"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        report = await drain.run("SIGTERM")
        assert 0.25 < time.monotonic() - started < 2
        assert sorted(report.cut_off) == ["a", "b"]
        assert report.exit_code == EXIT_CUT_OFF
        for task in (running, queued):
            with pytest.raises(Draining, match="cut off"):
                await task
        with pytest.raises(Draining):
            await service.run(lambda m: "new")
        # The lifespan's shutdown after a cut-off does not wait for the running thread again.
        shutdown_started = time.monotonic()
        await service.shutdown(grace_s=0)
        assert time.monotonic() - shutdown_started < 1
        assert service.slot.process_state is ProcessState.STOPPED

    asyncio.run(scenario())
    assert service.gate.accepted_labels() == ["a"]  # its thread still runs
    release.set()
    assert service.gate.wait_empty(timeout=5)  # and gives its place back when it ends


def test_hurry_moves_the_deadline_to_now() -> None:
    service = make_service()
    release = threading.Event()
    drain = Drain(service, delay_s=0, timeout_s=60)

    async def scenario() -> None:
        running = asyncio.ensure_future(service.run(lambda m: held(release), request_id="x"))
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(drain.run("SIGINT"))
        await asyncio.sleep(0.05)
        drain.hurry()
        report = await asyncio.wait_for(stopping, 2)
        assert report.cut_off == ("x",)
        with pytest.raises(Draining):
            await running

    asyncio.run(scenario())
    release.set()


def test_begin_is_idempotent_and_the_lifespan_after_a_drain_releases_the_model() -> None:
    loader = CountingLoader()
    slot = ModelSlot("t", loader, release=loader.release)
    service = Service(slot, Settings(drain_timeout_s=5))
    drain = Drain(service)
    assert (drain.delay_s, drain.timeout_s) == (0.0, 5)

    async def scenario() -> None:
        async with service.lifespan():
            await slot.aget(timeout=5)
            assert drain.fail_readiness()
            assert not drain.fail_readiness()
            report = await drain.run("SIGTERM")
            assert report.clean

    asyncio.run(scenario())
    assert slot.process_state is ProcessState.STOPPED
    assert len(loader.released) == 1


def test_drain_settings() -> None:
    defaults = Settings.from_env({})
    assert (defaults.drain_delay_s, defaults.drain_timeout_s) == (0.0, 60.0)
    settings = Settings.from_env({"THAW_DRAIN_DELAY_S": "5", "THAW_DRAIN_TIMEOUT_S": "25"})
    assert (settings.drain_delay_s, settings.drain_timeout_s) == (5.0, 25.0)
    with pytest.raises(SettingsError, match="THAW_DRAIN_DELAY_S"):
        Settings.from_env({"THAW_DRAIN_DELAY_S": "30", "THAW_DRAIN_TIMEOUT_S": "25"})
    with pytest.raises(SettingsError, match="THAW_DRAIN_TIMEOUT_S"):
        Settings.from_env({"THAW_DRAIN_TIMEOUT_S": "0"})
    with pytest.raises(SettingsError, match="THAW_IDLE_UNLOAD_S"):
        Settings.from_env({"THAW_IDLE_UNLOAD_S": "soon"})
    assert Settings.from_env({"THAW_IDLE_UNLOAD_S": "600"}).idle_unload_s == 600.0
