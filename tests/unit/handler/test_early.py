"""handler.early: `python -m handler` starts the model worker before its web stack only when the
settings will load the model at startup in a worker process."""

from __future__ import annotations

import gc
import os

import pytest

import runtime
from handler.early import LOAD_REF, start_worker_early, startup_collector
from runtime.worker import WorkerProcess


@pytest.mark.parametrize(
    "env",
    [
        {"THAW_PRELOAD": "lazy"},
        {"THAW_WORKER": "inline"},
        {"THAW_DEVICE": "abacus"},  # invalid: the app reports it, nothing starts
    ],
)
def test_no_early_worker_when_the_settings_do_not_preload_in_a_worker(
    env: dict[str, str],
) -> None:
    assert start_worker_early(env) is None


@pytest.mark.parametrize("preload", ["background", "eager"])
def test_an_early_worker_loads_with_the_in_process_loader_and_is_the_one_taken(
    preload: str,
) -> None:
    environ = {**os.environ, "THAW_PRELOAD": preload, "THAW_MODEL": "/nowhere/at/all"}
    early = start_worker_early(environ)
    assert early is not None
    try:
        assert early.load_ref == LOAD_REF
        assert WorkerProcess.take(LOAD_REF, env=early.env) is early
    finally:
        early.close()


def test_the_runtime_package_names_resolve_on_first_use() -> None:
    for name in runtime.__all__:
        assert getattr(runtime, name).__name__ == name
    with pytest.raises(AttributeError):
        _ = runtime.Nothing


@pytest.mark.parametrize(
    ("env", "paused"),
    [
        ({}, True),
        ({"THAW_GC_PAUSE": "0"}, False),
        ({"THAW_GC_PAUSE": "abacus"}, False),  # invalid: the app reports it
    ],
)
def test_the_web_stack_imports_with_the_collector_paused_unless_told_not_to(
    env: dict[str, str], paused: bool
) -> None:
    gc.enable()
    try:
        with startup_collector(env):
            assert gc.isenabled() is not paused
        assert gc.isenabled()
    finally:
        gc.unfreeze()
