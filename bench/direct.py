"""Baseline for the warm path: call the pipeline directly (PNG encode included), no HTTP.

    python -m bench.direct STEPS SIZE

Loads the pipeline, prints "ready", then runs one generation per line read from stdin and
prints its seconds, so a benchmark can alternate it with HTTP requests (paired samples).
"""

from __future__ import annotations

import os
import sys
import time

from handler.config import Config
from handler.pipeline import GenerationParams, generate, load_pipeline
from runtime.observe.phases import PhaseRecorder


def main() -> None:
    steps, size = (int(arg) for arg in sys.argv[1:3])
    loaded = load_pipeline(Config.from_env(os.environ), PhaseRecorder())
    params = GenerationParams("a lighthouse", None, steps, 7.5, size, size, 1)
    generate(loaded, params)  # first-call costs, as the server's first request pays them
    print("ready", flush=True)
    for _ in sys.stdin:
        started = time.perf_counter()
        generate(loaded, params)
        print(time.perf_counter() - started, flush=True)


if __name__ == "__main__":
    main()
