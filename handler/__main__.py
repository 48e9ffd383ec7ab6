"""`python -m handler`: serve `handler.app:app` under uvicorn on THAW_HOST:THAW_PORT."""

from __future__ import annotations

import os
import sys

import uvicorn

from handler.config import Config
from runtime.logs import configure_logging


def main() -> int:
    config = Config.from_env(os.environ)
    settings = config.runtime
    configure_logging(settings.log_level)
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
