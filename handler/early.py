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
from runtime import collector
from runtime.settings import PreloadPolicy, Settings, SettingsError, WorkerMode
from runtime.worker import WorkerProcess


def startup_collector(environ: Mapping[str, str]) -> AbstractContextManager[None]:
    """Pause the garbage collector while the server imports its web stack, as loads do (see
    runtime.collector): the modules it imports live as long as the process."""
    try:
        settings = Settings.from_env(environ)
    except SettingsError:
        return nullcontext()
    return collector.paused() if settings.gc_pause else nullcontext()


def start_worker_early(environ: Mapping[str, str]) -> WorkerProcess | None:
    """Start the worker now if the settings will load it at startup anyway (process worker,
    background or eager preload). Invalid settings start nothing: the app reports them."""
    try:
        settings = Config.from_env(environ).runtime
    except SettingsError:
        return None
    if settings.worker is not WorkerMode.PROCESS or settings.preload is PreloadPolicy.LAZY:
        return None
    return WorkerProcess.start_early(LOAD_REF, env=environ)
