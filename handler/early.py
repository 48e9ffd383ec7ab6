"""Start the model worker before the web stack imports, so the two overlap.

With the default `THAW_WORKER=process`, the model loads in a child process that spends most of a
cold start importing torch, transformers and diffusers. The parent used to start it from the
lifespan, after importing uvicorn, FastAPI and the app: the child's imports waited for the
parent's. Started from here, first thing, the child imports while the parent does, and the
slot's first load takes this worker (`WorkerProcess.take`) instead of starting another. Only the
standard library, `runtime.worker`, `runtime.settings` and `handler.config` are imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from handler.child import LOAD_REF
from handler.config import Config
from runtime import collector, cpus
from runtime.settings import PreloadPolicy, Settings, SettingsError, WorkerMode, WorkerStart
from runtime.worker import WorkerProcess


def startup_collector(environ: Mapping[str, str]) -> AbstractContextManager[None]:
    """Pause the garbage collector while the server imports its web stack, as loads do (see
    runtime.collector): the modules it imports live as long as the process."""
    try:
        settings = Settings.from_env(environ)
    except SettingsError:
        return nullcontext()
    return collector.paused() if settings.gc_pause else nullcontext()


def start_worker_early(
    environ: Mapping[str, str], available_cpus: float | None = None
) -> WorkerProcess | None:
    """Start the worker now if the settings will load it at startup anyway (process worker,
    background or eager preload). Invalid settings start nothing: the app reports them.

    With fewer than two CPUs (affinity or cgroup quota, `runtime.cpus`) and a background
    preload nothing starts here (`THAW_WORKER_START`): the worker's interpreter and imports
    would share the one CPU with the server's, which would listen later for nothing; the load
    then starts its worker once the server listens (handler/server.py). An eager preload waits
    for the load before listening, so it starts here."""
    try:
        settings = Config.from_env(environ).runtime
    except SettingsError:
        return None
    if settings.worker is not WorkerMode.PROCESS or settings.preload is PreloadPolicy.LAZY:
        return None
    if starts_late(settings, available_cpus):
        return None
    return WorkerProcess.start_early(LOAD_REF, env=environ)


def starts_late(settings: Settings, available_cpus: float | None = None) -> bool:
    """Whether the worker waits for the server to listen instead of starting first thing."""
    if settings.preload is not PreloadPolicy.BACKGROUND:
        return False
    if settings.worker_start is WorkerStart.AUTO:
        return (cpus.available() if available_cpus is None else available_cpus) < 2
    return settings.worker_start is WorkerStart.AFTER_LISTEN
