"""A stand-in model for runtime.worker tests: loads in phases, echoes, raises or dies on cue."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from runtime.observe.phases import PhaseRecorder


@dataclass
class Model:
    pid: int

    def summary(self) -> dict[str, object]:
        return {"pid": self.pid}


def load(phases: PhaseRecorder) -> Model:
    with phases.phase("import"):
        time.sleep(0.05)
    with phases.phase("build"):
        phases.progress("build", bytes_done=10, bytes_total=10)
    return Model(pid=os.getpid())


def load_slowly(phases: PhaseRecorder) -> Model:
    with phases.phase("import"):
        time.sleep(0.5)
    return Model(pid=os.getpid())


def load_fails(phases: PhaseRecorder) -> Model:
    with phases.phase("build"):
        raise FileNotFoundError("no weights at /nowhere")


def load_hangs(phases: PhaseRecorder) -> Model:
    with phases.phase("import"):
        time.sleep(600)
    return Model(pid=os.getpid())


def echo(model: Model, value: object) -> tuple[int, object]:
    return model.pid, value


def boom(model: Model) -> None:
    raise ValueError("bad input for this model")


def die(model: Model) -> None:
    os._exit(3)


def nap(model: Model, seconds: float) -> int:
    time.sleep(seconds)
    return model.pid


class ModelLibraryError(Exception):
    """Stands for an exception class of a model library (torch's CUDA out-of-memory error)."""


def boom_from_the_library(model: Model) -> None:
    raise ModelLibraryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def span(model: Model, seconds: float) -> tuple[float, float]:
    """When this call ran in the child (monotonic start and end)."""
    started = time.monotonic()
    time.sleep(seconds)
    return started, time.monotonic()


def steps(model: Model, count: int, seconds: float) -> int:
    """`count` steps of `seconds` each, reported to the work in hand (which may cancel)."""
    from runtime.work import current

    work = current()
    for step in range(1, count + 1):
        time.sleep(seconds)
        work.step(step, count)
    return count
