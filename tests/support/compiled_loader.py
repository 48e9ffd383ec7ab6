"""A user's `THAW_LOADER` that asks for `torch.compile` (the recipe in docs/model-sources.md):
thaw's own load, then the denoiser compiled and run once at the served size, so the compilation
is paid before the model is ready. `THAW_TEST_COMPILE_BACKEND` picks the backend (default
`aot_eager`: dynamo and AOTAutograd without inductor's C++ build, about 4 s on the tiny model
instead of 45 s)."""

from __future__ import annotations

import logging
import os

from handler.config import Config
from handler.pipeline import GenerationParams, LoadedPipeline, generate, load_pipeline
from runtime.observe.phases import PhaseRecorder

log = logging.getLogger("thaw.test.compile")


def load(config: Config, phases: PhaseRecorder) -> LoadedPipeline:
    import torch
    import torch._dynamo.utils

    loaded = load_pipeline(config, phases)
    pipe = loaded.pipe
    name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    backend = os.environ.get("THAW_TEST_COMPILE_BACKEND", "aot_eager")
    with phases.phase("compile"):
        setattr(pipe, name, torch.compile(getattr(pipe, name), backend=backend))
        width, height = loaded.default_size
        generate(loaded, GenerationParams("compile", None, 1, None, width, height, 0))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    log.info("denoiser compiled", extra={"component": name, "backend": backend, "graphs": graphs})
    return loaded
