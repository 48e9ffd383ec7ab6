"""`python -m handler`'s server starts a deferred preload once its socket accepts, and not at
all when a stop signal came while uvicorn started (a real uvicorn startup on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

import uvicorn

from handler.server import DrainingServer
from runtime.lifecycle.drain import Drain
from runtime.lifecycle.service import Service
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.settings import Settings
from tests.support.fakes import CountingLoader, FakeModel


async def nothing(scope: object, receive: object, send: object) -> None:
    return None


uvicorn_log = logging.getLogger("uvicorn.error")


class StopOn(logging.Handler):
    """Sends the server a SIGTERM (its handler, as the signal would) on a log record."""

    def __init__(self, start_of_message: str, server: DrainingServer) -> None:
        super().__init__()
        self.start_of_message = start_of_message
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.start_of_message):
            self.server.handle_exit(signal.SIGTERM, None)


def deferred_service(loader: CountingLoader) -> Service[FakeModel]:
    slot = ModelSlot("t", loader, release=loader.release, retry=RetryPolicy(attempts=1))
    service = Service(slot, Settings())
    service.preload_when_listening()
    return service


async def start(service: Service[FakeModel], *, signal_first: bool) -> tuple[bool, bool]:
    """Run uvicorn's startup; return (whether it listened, whether the preload started)."""
    config = uvicorn.Config(nothing, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    # A drain that cannot end within the test: only its start is in question.
    server = DrainingServer(config, Drain(service, delay_s=30.0), on_listening=service.listening)
    # What uvicorn's `serve` does before its `startup`.
    server._loop = asyncio.get_running_loop()
    config.load()
    server.lifespan = config.lifespan_class(config)
    if signal_first:
        # SIGTERM as uvicorn's startup ends (its last act is this log line), when the drain it
        # starts cannot have run yet.
        stop_on_running = StopOn("Uvicorn running on", server)
        uvicorn_log.addHandler(stop_on_running)
        uvicorn_log.setLevel(logging.INFO)
    try:
        await server.startup()
    finally:
        if signal_first:
            uvicorn_log.removeHandler(stop_on_running)
    try:
        sockets = [sock for srv in server.servers for sock in srv.sockets]
        listened = bool(sockets) and sockets[0].family in (socket.AF_INET, socket.AF_INET6)
        return listened, service.slot.snapshot().status != "cold"
    finally:
        if server._draining is not None:
            server._draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server._draining
        await server.shutdown()
        service.slot.stop()


def test_the_deferred_preload_starts_once_the_socket_accepts() -> None:
    loader = CountingLoader()
    service = deferred_service(loader)
    assert service.slot.snapshot().load_attempts == 0
    assert asyncio.run(start(service, signal_first=False)) == (True, True)
    assert service.health()["cold_start"]["listening_after_s"] is not None


def test_a_stop_signal_during_startup_starts_no_load() -> None:
    loader = CountingLoader()
    service = deferred_service(loader)
    assert asyncio.run(start(service, signal_first=True)) == (True, False)
    assert loader.calls == 0
