"""A `THAW_LOADER` whose loads fail until a file exists: a volume not mounted yet, a registry
that comes back. `THAW_TEST_READY_FILE` names the file; `never` makes every load fail."""

from __future__ import annotations

import os
from pathlib import Path

from handler.config import Config
from handler.pipeline import LoadedPipeline, load_pipeline
from runtime.observe.phases import PhaseRecorder


def load(config: Config, phases: PhaseRecorder) -> LoadedPipeline:
    marker = os.environ.get("THAW_TEST_READY_FILE", "never")
    if marker == "never" or not Path(marker).exists():
        raise FileNotFoundError(f"the weights volume is not mounted yet ({marker})")
    return load_pipeline(config, phases)
