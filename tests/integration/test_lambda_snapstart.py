"""SnapStart under thaw's Runtime API emulator: INIT with `snap-start`, the snapshot (the whole
process group frozen in `restore/next`), the restore, then invokes; the real `awslambdaric` runs
the hooks registered with `snapshot_restore_py`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.support.lambda_emulator import RuntimeApiEmulator

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "events"
BASE_ENV = {"THAW_TORCH_THREADS": "1", "THAW_LOG_LEVEL": "info"}
TEST_HANDLER = "tests.support.snapstart_handler.handler"


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def log_records(emulator: RuntimeApiEmulator, message: str) -> list[dict[str, Any]]:
    records = []
    for line in emulator.log.splitlines():
        if line.startswith("{") and f'"msg": "{message}"' in line:
            records.append(json.loads(line))
    return records


# -- the emulator's restore protocol, with a bare handler --------------------------------------


def test_the_emulator_snapshots_after_init_and_restores_before_the_first_invoke() -> None:
    emulator = RuntimeApiEmulator()
    emulator.start({}, init_type="snap-start", handler=TEST_HANDLER)
    try:
        emulator.wait_snapshot(60)
        assert emulator.frozen  # the snapshot: the environment is stopped inside restore/next
        assert emulator.process_state() == "T"
        assert not emulator.init_done.is_set()  # no /next before the restore
        emulator.restore()
        answer = emulator.invoke({"n": 1}, timeout_ms=10_000)
        assert answer.result == {"echo": {"n": 1}}
        lines = [line for line in emulator.log.splitlines() if line.startswith("test handler")]
        assert lines == [
            "test handler: init",
            "test handler: before snapshot",
            "test handler: after restore",
        ]
    finally:
        emulator.close()


def test_a_failing_after_restore_hook_is_reported_to_restore_error() -> None:
    emulator = RuntimeApiEmulator()
    emulator.start({"THAW_TEST_HOOK_FAILS": "after"}, init_type="snap-start", handler=TEST_HANDLER)
    try:
        emulator.wait_snapshot(60)
        emulator.restore()
        assert emulator.restore_failed.wait(30), emulator.log[-3000:]
        assert emulator.restore_error_type == "Runtime.AfterRestoreError"
        assert emulator.restore_error is not None
        assert "failed on purpose" in emulator.restore_error["errorMessage"]
        assert emulator.proc is not None
        assert emulator.proc.wait(30) == 65
    finally:
        emulator.close()


def test_a_failing_before_snapshot_hook_is_an_init_error() -> None:
    emulator = RuntimeApiEmulator()
    emulator.start({"THAW_TEST_HOOK_FAILS": "before"}, init_type="snap-start", handler=TEST_HANDLER)
    try:
        assert emulator.init_failed.wait(30), emulator.log[-3000:]
        assert emulator.init_error_type == "Runtime.BeforeSnapshotError"
        assert not emulator.snapshot_taken.is_set()
    finally:
        emulator.close()


# -- thaw under SnapStart ------------------------------------------------------------------------


def test_a_restored_environment_serves_without_a_load_with_its_own_identity(
    tiny_model: Path,
) -> None:
    emulator = RuntimeApiEmulator()
    emulator.start(
        {**BASE_ENV, "THAW_MODEL": str(tiny_model), "THAW_WARM_INFERENCE": "1"},
        init_type="snap-start",
    )
    try:
        emulator.wait_snapshot(150)
        [before] = log_records(emulator, "snapstart: ready for the snapshot")
        assert before["model"] == "ready"
        assert before["worker_pid"] > 0
        environment = emulator.environment_pids()
        emulator.restore()
        ping = emulator.invoke({"thaw": "warmup"}, timeout_ms=30_000)
        assert ping.outcome == "response", ping.body
        [after] = log_records(emulator, "snapstart: restored")
        # The hooks ran in order, each once: INIT's load, the snapshot, the restore.
        log = emulator.log
        assert log.index('"model load started"') < log.index("snapstart: ready for the snapshot")
        assert log.index("snapstart: ready for the snapshot") < log.index("snapstart: restored")
        # A new identity, and new random state in this process and in the model's worker.
        assert after["environment_id"] != before["environment_id"]
        assert after["previous_environment_id"] == before["environment_id"]
        assert ping.result["environment_id"] == after["environment_id"]
        assert ping.result["cold_start"] is False
        for process in ("server", "worker"):
            assert after["rng"][process] != before["rng"][process], process
            assert set(after["rng"][process]) == set(before["rng"][process])
        assert {"random", "numpy", "torch"} <= set(after["rng"]["worker"])
        assert after["worker_pid"] == before["worker_pid"]  # the same worker, not a new one
        assert emulator.environment_pids() == environment
        # The first image after the restore: no load, and /health tells of the restore.
        generate = emulator.invoke(event("function_url_generate.json"), timeout_ms=30_000)
        assert generate.result["statusCode"] == 200, generate.result
        assert base64.b64decode(generate.result["body"]).startswith(b"\x89PNG")
        health = emulator.invoke(event("function_url_health.json"), timeout_ms=10_000)
        report = json.loads(health.result["body"])
        assert report["loads_completed"] == 1
        assert report["load_attempts"] == 1
        assert [phase["name"] for phase in report["phases"]] == ["restore"]
        assert emulator.restored_at is not None
        assert report["uptime_s"] < emulator.restored_at - emulator.spawned_at
        assert log.count('"model load started"') == 1
        metrics = [
            json.loads(line)
            for line in emulator.log.splitlines()
            if line.startswith("{") and '"_aws"' in line
        ]
        assert any("RestoreTime" in record for record in metrics)
        assert not any("LoadTime" in record for record in metrics)
    finally:
        emulator.close()


def test_a_worker_lost_while_frozen_fails_the_restore_through_restore_error(
    tiny_model: Path,
) -> None:
    emulator = RuntimeApiEmulator()
    emulator.start({**BASE_ENV, "THAW_MODEL": str(tiny_model)}, init_type="snap-start")
    try:
        emulator.wait_snapshot(150)
        [before] = log_records(emulator, "snapstart: ready for the snapshot")
        os.kill(before["worker_pid"], signal.SIGKILL)  # gone while the snapshot waits
        emulator.restore()
        assert emulator.restore_failed.wait(60), emulator.log[-3000:]
        assert emulator.restore_error_type == "Runtime.AfterRestoreError"
        assert emulator.restore_error is not None
        assert "worker" in emulator.restore_error["errorMessage"]
        assert emulator.proc is not None
        assert emulator.proc.wait(30) == 65
    finally:
        emulator.close()


# -- what an outside review tried (issue 16) ------------------------------------------------------


def test_a_model_that_cannot_load_fails_init_and_no_snapshot_is_taken() -> None:
    """INIT loads synchronously under SnapStart, so the import of the handler raises: INIT fails
    with the load's own error (`LoadFailed`) before the before-snapshot hook could run, and no
    snapshot of a broken environment is taken."""
    emulator = RuntimeApiEmulator()
    emulator.start(
        {**BASE_ENV, "THAW_MODEL": "/nonexistent/thaw-model", "THAW_LOAD_ATTEMPTS": "1"},
        init_type="snap-start",
    )
    try:
        assert emulator.init_failed.wait(120), emulator.log[-3000:]
        assert emulator.init_error_type == "LoadFailed"
        assert emulator.init_error is not None
        assert "/nonexistent/thaw-model" in emulator.init_error["errorMessage"]
        assert not emulator.snapshot_taken.is_set()
        assert "snapstart: ready for the snapshot" not in emulator.log
        assert emulator.proc is not None
        assert emulator.proc.wait(30) != 0
    finally:
        emulator.close()


def test_an_omitted_seed_is_not_drawn_from_state_a_snapshot_shares() -> None:
    """Every environment restored from one snapshot starts with the same `random` and numpy
    state (and the same pid): a seed drawn from them would repeat across environments. Replay
    that state twice; the seeds drawn for a request without one still differ."""
    import random

    import numpy

    from handler.config import Config
    from handler.schemas import GenerateRequestBase

    limits = Config.from_env({}).limits
    before = (random.getstate(), numpy.random.get_state())
    try:
        random.seed(20261202)
        numpy.random.seed(20261202)
        shared = (random.getstate(), numpy.random.get_state())
        seeds = []
        for _ in range(2):  # two "restores" of one snapshot
            random.setstate(shared[0])
            numpy.random.set_state(shared[1])
            request = GenerateRequestBase.model_validate({"prompt": "a fox"})
            seeds.append(request.to_params(limits).seed)
    finally:
        random.setstate(before[0])
        numpy.random.set_state(before[1])
    assert seeds[0] != seeds[1]


def test_a_lazy_snapshot_reports_the_load_done_after_the_restore(tiny_model: Path) -> None:
    emulator = RuntimeApiEmulator()
    emulator.start(
        {**BASE_ENV, "THAW_MODEL": str(tiny_model), "THAW_PRELOAD": "lazy"},
        init_type="snap-start",
    )
    try:
        emulator.wait_snapshot(60)
        emulator.restore()
        ping = emulator.invoke({"thaw": "warmup"}, timeout_ms=120_000)
        assert ping.result["warm"] is True, ping.body
        assert ping.result["load_seconds"] > 0
        metrics = [
            json.loads(line)
            for line in emulator.log.splitlines()
            if line.startswith("{") and '"_aws"' in line
        ]
        assert any("LoadTime" in record for record in metrics), metrics
    finally:
        emulator.close()
