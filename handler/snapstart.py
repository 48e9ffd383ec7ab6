"""SnapStart for the text-to-image function: where its model's random state lives.

`runtime.aws.snapstart` reseeds the Lambda process itself; the pipeline runs in a worker process
by default (runtime.worker), whose `random`, numpy and torch generators were also seeded in INIT
and would be shared by every environment restored from one snapshot. `PipelineProcess` reaches
them through `WorkerProcess.call`, which runs `rng_state` or `reseed` below in the worker.
"""

from __future__ import annotations

import os
from typing import Any

from handler.pipeline import LoadedPipeline
from runtime.aws.snapstart import reseed_process
from runtime.aws.snapstart import rng_state as process_rng_state
from runtime.worker import WorkerProcess


def rng_state(_model: Any) -> dict[str, Any]:
    """Run in the model's process: its pid and its generators' digests."""
    return {"pid": os.getpid(), "rng": process_rng_state()}


def reseed(_model: Any, seed: int) -> dict[str, Any]:
    """Run in the model's process: reseed its generators, then report as `rng_state`."""
    reseed_process(seed)
    return rng_state(_model)


class PipelineProcess:
    """`runtime.aws.snapstart.ModelProcess` for a `LoadedPipeline`: in its worker when it has
    one (`THAW_WORKER=process`), else here (`inline`)."""

    def describe(self, model: LoadedPipeline) -> dict[str, Any]:
        if isinstance(model.pipe, WorkerProcess):
            answer: dict[str, Any] = model.pipe.call("handler.snapstart:rng_state")
            return answer
        return rng_state(model)

    def reseed(self, model: LoadedPipeline, seed: int) -> dict[str, Any]:
        if isinstance(model.pipe, WorkerProcess):
            answer: dict[str, Any] = model.pipe.call("handler.snapstart:reseed", seed)
            return answer
        return reseed(model, seed)
