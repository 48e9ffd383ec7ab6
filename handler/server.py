"""The HTTP server behind `python -m handler`: uvicorn on THAW_HOST:THAW_PORT, with thaw's drain.

On SIGTERM or SIGINT the server does not stop listening at once, as plain uvicorn would: it keeps
answering (probes, and 503 Draining for new work) while `runtime.lifecycle.drain.Drain` lets
accepted requests finish, and only then lets uvicorn close the listener and run the lifespan
shutdown, which releases the model. See runtime/lifecycle/drain.py for the order and the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

from runtime.lifecycle.drain import LISTENER_CLOSE_S, Drain, DrainReport
from runtime.observe.logs import configure_logging

log = logging.getLogger("thaw.server")


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose stop signals start a drain instead of stopping at once.

    Only uvicorn's public surface is used: `serve`, `startup` (whose end is the moment the
    sockets accept: `on_listening` runs then), the `handle_exit` signal handler and the
    `should_exit` flag that its main loop polls.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        drain: Drain,
        on_listening: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.on_listening = on_listening
        self._signaled = False  # set in the signal handler itself, before the loop hears of it
        self.report: DrainReport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # A stop signal may have come while uvicorn started: its drain is queued on the loop
        # but has not closed the slot yet, and nothing must start loading for a process that
        # is on its way out.
        stopping = self._signaled or self.should_exit
        if self.started and not stopping and self.on_listening is not None:
            await self.on_listening()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of whatever the main thread (the event
        # loop) was doing, maybe inside a lock the drain needs: only hand over to the loop.
        self._signaled = True
        if self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._loop.call_soon_threadsafe(self._on_signal, signal.Signals(sig))

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain_then_exit(sig.name))
        elif sig is signal.SIGINT:
            log.warning("second interrupt: cutting the drain short")
            self.drain.hurry()
        else:
            log.info("already draining", extra={"signal": sig.name})

    async def _drain_then_exit(self, reason: str) -> None:
        try:
            self.report = await self.drain.run(reason)
        finally:
            self.should_exit = True  # uvicorn closes the listener, then runs the lifespan shutdown


def main() -> int:
    from handler.app import app  # reads the configuration once; imports no torch
    from handler.early import starts_late
    from handler.state import AppState

    state: AppState = app.state.thaw
    service = state.service
    settings = service.settings
    configure_logging(settings.log_level, settings.log_format)
    config = uvicorn.Config(
        app,
        host=state.config.server.host,
        port=state.config.server.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=LISTENER_CLOSE_S,
    )
    if starts_late(settings):
        # One CPU (or THAW_WORKER_START=after_listen): the worker starts once the server listens.
        service.preload_when_listening()
    server = DrainingServer(config, Drain(service), on_listening=service.listening)
    server.run()
    # The process is on its way out: a repeated stop signal must not turn a finished drain
    # into a death by signal (uvicorn restored the default handlers when it returned).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    report = server.report
    if report is not None and not report.clean:
        # Cut-off inference threads may still run, and the interpreter would wait for them at
        # exit (ThreadPoolExecutor joins its workers): past the deadline, leave now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(report.exit_code)
    return 0
