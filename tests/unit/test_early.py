"""handler.early: `python -m handler` starts the model worker before its web stack only when the
settings will load the model at startup in a worker process."""

from __future__ import annotations

import os

import pytest

import runtime
from handler.early import LOAD_REF, start_worker_early
from runtime.worker import WorkerProcess


@pytest.mark.parametrize(
    "env",
    [
        {"THAW_PRELOAD": "lazy"},
        {"THAW_WORKER": "thread"},
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
        assert early.env["THAW_WORKER"] == "thread"  # the child loads in itself, no grandchild
        assert WorkerProcess.take(LOAD_REF, env=early.env) is early
    finally:
        early.close()


def test_the_runtime_package_names_resolve_on_first_use() -> None:
    for name in runtime.__all__:
        assert getattr(runtime, name).__name__ == name
    with pytest.raises(AttributeError):
        _ = runtime.Nothing
