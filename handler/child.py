"""What the model worker process runs to load: `LOAD_REF` names `load_from_env` below.

The child is started with `python -m runtime.worker` (see runtime.worker); it imports this
module, reads the same `THAW_*` settings from its environment as its parent, and loads the
pipeline in itself, whatever `THAW_WORKER` says (the child is the worker: no grandchild).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from handler.pipeline import LoadedPipeline
    from runtime.observe.phases import PhaseRecorder

LOAD_REF = "handler.child:load_from_env"
"""The `module:function` the worker process runs to load (`runtime.worker.import_ref`)."""


def load_from_env(phases: PhaseRecorder) -> LoadedPipeline:
    """Load the configured pipeline in this process, with the settings from its environment."""
    from handler.config import Config
    from handler.pipeline import in_process_loader
    from runtime.observe.logs import configure_logging

    config = Config.from_env(os.environ)
    configure_logging(config.runtime.log_level, config.runtime.log_format)
    return in_process_loader(config)(config, phases)
