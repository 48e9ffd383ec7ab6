"""SnapStart hooks with a fake loader, a fake clock and a model process in this process."""

from __future__ import annotations

import gc
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runtime.aws.adapter import LambdaAdapter
from runtime.aws.emf import EmfWriter
from runtime.aws.snapstart import (
    RestoreFailed,
    SnapshotNotReady,
    SnapStartHooks,
    reseed_process,
    rng_state,
)
from runtime.aws.warmup import Warmer
from runtime.lifecycle.service import Service
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.settings import Settings
from tests.support.fakes import CountingLoader, FakeClock

EVENTS = Path(__file__).resolve().parents[2] / "fixtures" / "events"


@dataclass
class InProcess:
    """The model runs here: its generators are this process's (as `THAW_WORKER=inline`)."""

    reseeds: list[int] = field(default_factory=list)
    fail_with: Exception | None = None

    def describe(self, model: Any) -> dict[str, Any]:
        return {"pid": 1, "rng": rng_state()}

    def reseed(self, model: Any, seed: int) -> dict[str, Any]:
        if self.fail_with is not None:
            raise self.fail_with
        self.reseeds.append(seed)
        return {"pid": 1, "rng": reseed_process(seed)}


@dataclass
class ClosingInvoker:
    closed: bool = False

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # before_snapshot freezes the collector's survivors: give them back


def make(
    loader: CountingLoader, clock: FakeClock, invoker: ClosingInvoker | None = None
) -> tuple[SnapStartHooks, LambdaAdapter, Service[Any], InProcess, io.StringIO]:
    slot: ModelSlot[Any] = ModelSlot(
        "test", loader, retry=RetryPolicy(attempts=1, cooldown_s=60), clock=clock
    )
    service: Service[Any] = Service(slot, Settings.from_env({}), clock=clock)
    warmer = Warmer(slot, "init-env", invoker_factory=lambda: invoker or ClosingInvoker())
    lines = io.StringIO()
    adapter = LambdaAdapter(
        slot,
        lambda event, context: {"statusCode": 200, "headers": {}, "body": "ok"},
        warmer,
        model_paths=("/generate",),
        clock=clock,
        metrics=EmfWriter(namespace="thaw", stream=lines),
    )
    process = InProcess()
    seeds = iter(range(101, 200))
    ids = iter(f"restored-{n}" for n in range(1, 99))
    hooks = SnapStartHooks(
        adapter,
        service,
        process,
        seed=lambda: next(seeds),
        new_id=lambda: next(ids),
        clock=clock,
    )
    return hooks, adapter, service, process, lines


def test_reseeding_changes_the_state_and_equal_seeds_give_equal_draws() -> None:
    before = rng_state()
    assert reseed_process(5) != before
    first = random.random()
    reseed_process(5)
    assert random.random() == first
    assert set(rng_state()) >= {"random"}


def test_after_restore_gives_a_new_identity_and_reseeds_here_and_in_the_model() -> None:
    clock = FakeClock()
    hooks, adapter, _, process, _ = make(CountingLoader(), clock)
    adapter.slot.get(timeout=5)
    hooks.before_snapshot()
    state = rng_state()
    hooks.after_restore()
    assert adapter.warmer.environment_id == "restored-1"
    assert rng_state() != state
    assert process.reseeds == [102]  # its own seed, not this process's (101)
    hooks.after_restore()  # a second restore from the same snapshot: another identity again
    assert adapter.warmer.environment_id == "restored-2"
    assert hooks.restores == 2


def test_after_restore_restarts_the_clocks_with_one_restore_phase() -> None:
    clock = FakeClock()
    hooks, adapter, service, _, lines = make(CountingLoader(), clock)
    adapter.slot.get(timeout=5)
    clock.advance(3600)  # the snapshot waited an hour before this restore
    hooks.after_restore()
    report = service.health()
    assert [phase["name"] for phase in report["phases"]] == ["restore"]
    assert report["phases"][0]["start_s"] == 0
    assert report["uptime_s"] == 0
    assert report["cold_start"]["ready_after_s"] == 0
    assert report["loads_completed"] == 1
    # The first invocation after the restore is this environment's cold start, and its metrics
    # report the restore, not INIT's load.
    adapter(json.loads((EVENTS / "function_url_health.json").read_text()), Context())
    emitted = lines.getvalue()
    assert '"RestoreTime"' in emitted
    assert '"LoadTime"' not in emitted
    assert '"ColdStartRequests":1' in emitted


def test_before_snapshot_closes_network_clients_and_they_reopen_on_use() -> None:
    invoker = ClosingInvoker()
    hooks, adapter, _, _, _ = make(CountingLoader(), FakeClock(), invoker)
    adapter.slot.get(timeout=5)
    assert adapter.warmer.invoker() is invoker
    hooks.before_snapshot()
    assert invoker.closed
    assert adapter.warmer._invoker is None
    assert adapter.warmer.invoker() is invoker  # made again by the factory on first use


def test_before_snapshot_waits_for_a_load_in_progress() -> None:
    loader = CountingLoader(delay=0.2)
    hooks, adapter, _, _, _ = make(loader, FakeClock())
    adapter.slot.start()
    hooks.before_snapshot()
    assert adapter.slot.ready


def test_a_failed_model_fails_the_snapshot() -> None:
    hooks, adapter, _, _, _ = make(CountingLoader(failures=1), FakeClock())
    adapter.slot.start()
    with pytest.raises(SnapshotNotReady, match="weights unreadable"):
        hooks.before_snapshot()


def test_a_model_process_that_cannot_reseed_fails_the_restore() -> None:
    hooks, adapter, _, process, _ = make(CountingLoader(), FakeClock())
    adapter.slot.get(timeout=5)
    process.fail_with = EOFError("the worker's socket ended")
    with pytest.raises(RestoreFailed, match="EOFError: the worker's socket ended"):
        hooks.after_restore()


@dataclass
class Context:
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:thaw:live"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000
