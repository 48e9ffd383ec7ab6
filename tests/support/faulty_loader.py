"""A `THAW_LOADER` for fault tests: the real pipeline, with faults on cue.

The prompt "__oom__" raises the CUDA out-of-memory error a GPU raises mid-generation;
"__slow__" holds the generation `THAW_TEST_SLOW_S` seconds (default 4) without using the CPU,
so deadline and disconnect tests do not depend on how busy the machine is; "__abort__" kills
the process it runs in.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

from handler.config import Config
from handler.pipeline import LoadedPipeline, load_pipeline
from runtime.observe.phases import PhaseRecorder


class _OutOfMemoryOnCue:
    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        prompt = kwargs.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        if "__abort__" in prompts:
            os.abort()  # the worker process dies mid-generation (a driver fault, say)
        if "__slow__" in prompts:
            time.sleep(float(os.environ.get("THAW_TEST_SLOW_S", "4")))
        if "__oom__" in prompts:
            import torch

            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 22.05 GiB total)"
            )
        return self._pipe(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


def load(config: Config, phases: PhaseRecorder) -> LoadedPipeline:
    loaded = load_pipeline(config, phases)
    return replace(loaded, pipe=_OutOfMemoryOnCue(loaded.pipe))
