"""`python -m handler`: serve the app under uvicorn on THAW_HOST:THAW_PORT, with thaw's drain.

The model worker starts first, before uvicorn, FastAPI and the app import (see handler/early.py),
then handler/server.py serves. A bad setting stops the process with one log line naming the
variable and exit status 2, not a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from handler.early import start_worker_early, startup_collector
from runtime.settings import EnvReader, LogFormat, SettingsError

CONFIGURATION_ERROR = 2
"""The exit status of a start refused for its settings (a usage error, as for a CLI)."""


def refuse(error: SettingsError, environ: Mapping[str, str]) -> int:
    """Say what is wrong in the format the logs would have had, and give up."""
    from runtime.observe.logs import configure_logging

    try:
        log_format = EnvReader(environ).choice("LOG_FORMAT", LogFormat, LogFormat.AUTO)
    except SettingsError:
        log_format = LogFormat.AUTO  # the bad setting may be this one
    configure_logging("info", log_format)
    logging.getLogger("thaw.config").error(f"invalid configuration: {error}")
    return CONFIGURATION_ERROR


if __name__ == "__main__":
    try:
        with startup_collector(os.environ):
            start_worker_early(os.environ)
            from handler.server import main
        code = main()  # imports the app, which reads and checks every setting
    except SettingsError as error:
        code = refuse(error, os.environ)
    sys.exit(code)
