"""runtime.worker: a model in a child process, its phases mirrored, calls, errors and death."""

from __future__ import annotations

import os

import pytest

from runtime.phases import PhaseRecorder
from runtime.worker import WorkerDied, WorkerProcess


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_child_loads_reports_its_phases_and_answers_calls() -> None:
    phases = PhaseRecorder()
    worker = WorkerProcess("tests.support.worker_model:load")
    try:
        summary = worker.wait_loaded(phases)
        assert summary == {"pid": worker.pid}
        reported = phases.snapshot()
        assert [p["name"] for p in reported] == ["import", "build"]
        assert all(p["state"] == "done" for p in reported)
        assert reported[1]["detail"] == {"bytes_done": 10, "bytes_total": 10}
        assert worker.call("tests.support.worker_model:echo", {"a": [1, 2]}) == (
            worker.pid,
            {"a": [1, 2]},
        )
        assert worker.pid != os.getpid()
    finally:
        worker.close()
    assert not alive(worker.pid)


def test_an_exception_in_a_call_comes_back_with_its_type_and_the_worker_lives_on() -> None:
    worker = WorkerProcess("tests.support.worker_model:load")
    try:
        worker.wait_loaded(PhaseRecorder())
        with pytest.raises(ValueError, match="bad input"):
            worker.call("tests.support.worker_model:boom")
        assert worker.call("tests.support.worker_model:echo", 1)[1] == 1
    finally:
        worker.close()


def test_a_load_failure_is_raised_in_the_parent_and_the_child_is_gone() -> None:
    phases = PhaseRecorder()
    worker = WorkerProcess("tests.support.worker_model:load_fails")
    with pytest.raises(FileNotFoundError, match="no weights"):
        worker.wait_loaded(phases)
    assert phases.snapshot()[0]["state"] == "failed"
    assert not alive(worker.pid)


def test_a_child_that_dies_fails_the_call_and_every_later_one() -> None:
    worker = WorkerProcess("tests.support.worker_model:load")
    try:
        worker.wait_loaded(PhaseRecorder())
        with pytest.raises(WorkerDied, match="status 3"):
            worker.call("tests.support.worker_model:die")
        with pytest.raises(WorkerDied):
            worker.call("tests.support.worker_model:echo", 1)
    finally:
        worker.close()


def test_a_load_past_its_timeout_kills_the_child() -> None:
    phases = PhaseRecorder()
    worker = WorkerProcess("tests.support.worker_model:load_hangs")
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.5s"):
        worker.wait_loaded(phases, timeout=0.5)
    assert not alive(worker.pid)
    assert phases.snapshot()[0]["state"] == "failed"
