"""The garbage collector during loads: off while a load runs, survivors frozen after a good one,
handed back before a release, and left as the user had it."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from handler.config import Config
from handler.pipeline import LoadedPipeline, choose_loader, release_pipeline
from runtime import collector
from runtime.observe.phases import PhaseRecorder
from runtime.settings import Settings, WorkerMode


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_a_load_runs_with_the_collector_off_and_freezes_what_survived() -> None:
    gc.enable()
    with collector.paused():
        assert not gc.isenabled()
        Node()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_a_failed_load_freezes_nothing_and_turns_the_collector_back_on() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector.paused():
        raise RuntimeError("load failed")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_collector_the_user_turned_off_stays_off() -> None:
    gc.disable()
    with collector.paused():
        pass
    assert not gc.isenabled()


def test_overlapping_pauses_keep_it_off_until_the_last_ends() -> None:
    gc.enable()
    outer_may_end = threading.Event()

    def outer() -> None:
        with collector.paused():
            outer_may_end.wait(5)

    thread = threading.Thread(target=outer)
    thread.start()
    with collector.paused():
        pass
    assert not gc.isenabled()  # the other load is still running
    outer_may_end.set()
    thread.join(5)
    assert gc.isenabled()


def test_what_a_load_froze_is_freed_after_unfreeze() -> None:
    gc.enable()
    with collector.paused():
        node = Node()
    ref = weakref.ref(node)
    del node
    gc.collect()
    assert ref() is not None  # frozen: collections skip it
    collector.unfreeze()
    gc.collect()
    assert ref() is None


def built_in_a_cycle(config: Config, phases: PhaseRecorder) -> LoadedPipeline:
    with phases.phase("build"):
        enabled = gc.isenabled()
    return LoadedPipeline(
        pipe={"node": Node(), "collector_on": enabled},
        device="cpu",
        dtype="float32",
        source=config.model_ref,
        default_size=(64, 64),
    )


def config_with(**changes: Any) -> Config:
    settings = Settings(loader=f"{__name__}:built_in_a_cycle", worker=WorkerMode.INLINE, **changes)
    return Config(runtime=settings)


def test_the_configured_loader_runs_paused_and_its_model_is_freed_on_release() -> None:
    gc.enable()
    loaded = choose_loader(config_with())(config_with(), PhaseRecorder())
    assert loaded.pipe["collector_on"] is False
    assert gc.isenabled()
    ref = weakref.ref(loaded.pipe["node"])
    release_pipeline(loaded)
    del loaded
    gc.collect()
    assert ref() is None


def test_thaw_gc_pause_off_leaves_the_collector_alone() -> None:
    gc.enable()
    config = config_with(gc_pause=False)
    loaded = choose_loader(config)(config, PhaseRecorder())
    assert loaded.pipe["collector_on"] is True
    assert gc.get_freeze_count() == 0
