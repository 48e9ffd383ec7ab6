"""`python -m handler`: serve `handler.app:app` under uvicorn on THAW_HOST:THAW_PORT."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import uvicorn

from handler.config import Config
from runtime.logs import configure_logging


def _stopped(_signum: int, _frame: FrameType | None) -> None:
    """uvicorn re-raises the stop signal after its graceful shutdown so the default action would
    kill the process with -15; a stop that completed its shutdown is a clean exit (0)."""


def main() -> int:
    config = Config.from_env(os.environ)
    settings = config.runtime
    configure_logging(settings.log_level)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped)
    uvicorn.run(
        "handler.app:app",
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
