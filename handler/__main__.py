"""`python -m handler`: serve the app under uvicorn on THAW_HOST:THAW_PORT, with thaw's drain.

The model worker starts first, before uvicorn, FastAPI and the app import (see handler/early.py),
then handler/server.py serves.
"""

from __future__ import annotations

import os
import sys

from handler.early import start_worker_early, startup_collector

if __name__ == "__main__":
    with startup_collector(os.environ):
        start_worker_early(os.environ)
        from handler.server import main

    sys.exit(main())
