"""runtime.worker: a model in a child process, its phases mirrored, calls, errors and death."""

from __future__ import annotations

import os
import threading
import time

import pytest

from runtime import work as work_in_hand
from runtime.errors import Canceled
from runtime.observe.phases import PhaseRecorder
from runtime.work import Control, Work
from runtime.worker import WorkerDied, WorkerProcess
from tests.support.procs import run_python, running


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
    assert not running(worker.pid)


def test_an_exception_in_a_call_comes_back_with_its_type_and_the_worker_lives_on() -> None:
    worker = WorkerProcess("tests.support.worker_model:load")
    try:
        worker.wait_loaded(PhaseRecorder())
        with pytest.raises(ValueError, match="bad input"):
            worker.call("tests.support.worker_model:boom")
        assert worker.call("tests.support.worker_model:echo", 1)[1] == 1
    finally:
        worker.close()


def test_a_library_exception_comes_back_as_text_without_importing_its_module() -> None:
    """Unpickling torch's CUDA OOM error would import torch into the HTTP process."""
    out = run_python(
        "import sys\n"
        "from runtime.observe.phases import PhaseRecorder\n"
        "from runtime.worker import RemoteError, WorkerProcess\n"
        "worker = WorkerProcess('tests.support.worker_model:load')\n"
        "worker.wait_loaded(PhaseRecorder())\n"
        "try:\n"
        "    worker.call('tests.support.worker_model:boom_from_the_library')\n"
        "except RemoteError as exc:\n"
        "    print(exc)\n"
        "print(worker.call('tests.support.worker_model:echo', 7)[1])\n"
        "print('tests.support.worker_model' in sys.modules)\n"
        "worker.close()\n"
    )
    assert out.splitlines() == [
        "ModelLibraryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "7",
        "False",
    ]


def test_a_load_failure_is_raised_in_the_parent_and_the_child_is_gone() -> None:
    phases = PhaseRecorder()
    worker = WorkerProcess("tests.support.worker_model:load_fails")
    with pytest.raises(FileNotFoundError, match="no weights"):
        worker.wait_loaded(phases)
    assert phases.snapshot()[0]["state"] == "failed"
    assert not running(worker.pid)


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
    with pytest.raises(TimeoutError, match=r"did not finish within 3s"):
        worker.wait_loaded(phases, timeout=3)
    assert not running(worker.pid)
    assert phases.snapshot()[0]["state"] == "failed"


def wait_gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not running(pid):
            return True
        time.sleep(0.05)
    return False


def test_an_early_worker_is_taken_once_and_its_phases_keep_their_own_times() -> None:
    early = WorkerProcess.start_early("tests.support.worker_model:load_slowly")
    try:
        assert early.started_early
        time.sleep(1.0)  # the owner arrives late: the child has loaded meanwhile
        taken = WorkerProcess.take("tests.support.worker_model:load_slowly")
        assert taken is early
        waited_from = time.monotonic()
        phases = PhaseRecorder()
        assert taken.wait_loaded(phases) == {"pid": early.pid}
        (imported,) = phases.snapshot()
        # Read late, timed by the child: half a second, over before the owner began to wait.
        assert imported["seconds"] >= 0.45
        assert imported["start_s"] < 0
        assert early.started_at + imported["seconds"] < waited_from
    finally:
        early.close()
    again = WorkerProcess.take("tests.support.worker_model:load_slowly")
    try:
        assert again.pid != early.pid
        assert not again.started_early
    finally:
        again.close()


def test_an_early_worker_for_another_model_is_stopped_not_taken() -> None:
    early = WorkerProcess.start_early("tests.support.worker_model:load_hangs")
    worker = WorkerProcess.take("tests.support.worker_model:load")
    try:
        assert worker.pid != early.pid
        assert wait_gone(early.pid, 5)
        assert worker.wait_loaded(PhaseRecorder()) == {"pid": worker.pid}
    finally:
        worker.close()


def test_a_worker_stops_loading_when_told_or_when_its_parent_dies() -> None:
    worker = WorkerProcess("tests.support.worker_model:load_hangs")
    started = time.monotonic()
    worker.close()
    assert time.monotonic() - started < 5  # stopped mid-load, not after close's 10 s wait
    assert not running(worker.pid)

    code = (
        "from runtime.worker import WorkerProcess\n"
        "w = WorkerProcess.start_early('tests.support.worker_model:load_hangs')\n"
        "print(w.pid, flush=True)\n"
        "import os; os._exit(0)\n"  # dies without closing anything
    )
    orphan = int(run_python(code).strip())
    assert wait_gone(orphan, 10)


def test_closing_a_worker_busy_with_a_call_kills_it_at_once() -> None:
    worker = WorkerProcess("tests.support.worker_model:load")
    worker.wait_loaded(PhaseRecorder())
    outcome: list[BaseException | int] = []

    def call() -> None:
        try:
            outcome.append(worker.call("tests.support.worker_model:nap", 30))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)  # the call is in the child
    started = time.monotonic()
    worker.close()
    assert time.monotonic() - started < 5  # not the 10 s polite wait, nor the 30 s nap
    caller.join(10)
    assert not caller.is_alive()
    assert isinstance(outcome[0], WorkerDied)
    assert not running(worker.pid)


def test_calls_run_side_by_side_in_the_child() -> None:
    """THAW_MAX_CONCURRENCY > 1 must mean concurrent calls, not calls queued behind one lock."""
    worker = WorkerProcess("tests.support.worker_model:load")
    try:
        worker.wait_loaded(PhaseRecorder())
        spans: list[tuple[float, float]] = []
        threads = [
            threading.Thread(
                target=lambda: spans.append(worker.call("tests.support.worker_model:span", 0.5))
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        (a_start, a_end), (b_start, b_end) = spans
        assert a_start < b_end
        assert b_start < a_end
    finally:
        worker.close()


def test_a_death_tells_the_owner_and_says_which_calls_had_started() -> None:
    worker = WorkerProcess("tests.support.worker_model:load")
    heard: list[str] = []
    try:
        worker.wait_loaded(PhaseRecorder())
        worker.when_lost(heard.append)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                worker.call("tests.support.worker_model:nap", 30)
            except WorkerDied as exc:
                errors.append(exc)

        running_call = threading.Thread(target=call)
        running_call.start()
        time.sleep(0.5)
        os.kill(worker.pid, 9)
        running_call.join(30)
        (died,) = errors
        assert died.started
        assert heard == ["the model worker exited (signal 9)"]
        with pytest.raises(WorkerDied) as after:
            worker.call("tests.support.worker_model:echo", 1)
        assert not after.value.started
    finally:
        worker.close()


def test_each_load_phase_is_logged_once() -> None:
    """The child records its phases and the parent mirrors them: only one of them logs."""
    out = run_python(
        "import os\n"
        "os.dup2(1, 2)  # the logs (stderr, the child's too) into what run_python returns\n"
        "from runtime.observe.logs import configure_logging\n"
        "from runtime.observe.phases import PhaseRecorder\n"
        "from runtime.worker import WorkerProcess\n"
        "configure_logging('info')\n"
        "worker = WorkerProcess('tests.support.worker_model:load')\n"
        "worker.wait_loaded(PhaseRecorder())\n"
        "worker.close()\n"
    )
    started = [line for line in out.splitlines() if "load phase started" in line]
    assert len(started) == 2, out  # import and build, once each


def test_progress_crosses_to_the_parent_and_a_cancel_stops_the_call_at_its_next_step() -> None:
    worker = WorkerProcess("tests.support.worker_model:load")
    try:
        worker.wait_loaded(PhaseRecorder())
        control = Control()
        seen: list[tuple[int, int]] = []
        ended: list[float | None] = []

        def heard(step: int, total: int) -> None:
            seen.append((step, total))
            ended.append(control.step_at)  # stamped in the child as each step ended

        control.listen(heard)
        outcome: list[BaseException | int] = []
        began = time.time()

        def call() -> None:
            with work_in_hand.running(Work([control])):
                try:
                    outcome.append(worker.call("tests.support.worker_model:steps", 1000, 0.01))
                except Canceled as exc:
                    outcome.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        control.cancel()
        caller.join(30)
        (result,) = outcome
        assert isinstance(result, Canceled)
        assert seen[:3] == [(1, 1000), (2, 1000), (3, 1000)]
        stamps = [at for at in ended if at is not None]
        assert len(stamps) == len(ended)
        assert began <= stamps[0]
        assert stamps == sorted(stamps)
        assert stamps[-1] <= time.time()
        assert stamps[2] - stamps[0] >= 0.015  # two steps of 10 ms apart: each its own time
        assert len(seen) < 1000
        assert worker.call("tests.support.worker_model:echo", 5)[1] == 5  # the worker lives on
    finally:
        worker.close()
