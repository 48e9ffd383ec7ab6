"""A second function beside `handler/` needs only the runtime: none of the diffusers settings."""

from __future__ import annotations

import asyncio

from runtime.lifecycle.service import Service
from runtime.lifecycle.slot import ModelSlot
from runtime.observe.phases import PhaseRecorder
from runtime.settings import Settings


def load_embedder(phases: PhaseRecorder) -> dict[str, int]:
    with phases.phase("build"):
        return {word: len(word) for word in ("cold", "start")}


def test_a_ten_line_embedding_function_runs_on_the_runtime_alone() -> None:
    settings = Settings.from_env({"THAW_PRELOAD": "eager", "THAW_DTYPE": "int4"})  # not its own
    service = Service(ModelSlot("embedder", load_embedder), settings)
    service.start()
    served = asyncio.run(service.run(lambda table: table["start"]))
    assert served.value == 5
    assert service.health()["status"] == "ready"
    assert not hasattr(settings, "dtype")
