"""A `THAW_LOADER` for tests: waits `THAW_TEST_LOAD_DELAY_S` seconds, then loads for real."""

from __future__ import annotations

import os
import time

from handler.config import Config
from handler.pipeline import LoadedPipeline, load_pipeline
from runtime.observe.phases import PhaseRecorder


def load(config: Config, phases: PhaseRecorder) -> LoadedPipeline:
    with phases.phase("test_delay"):
        time.sleep(float(os.environ.get("THAW_TEST_LOAD_DELAY_S", "5")))
    return load_pipeline(config, phases)
