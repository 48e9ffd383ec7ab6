"""THAW_WORKER=process over real HTTP: the pipeline lives in a child process; probes, generation,
a killed worker (replaced at once; a request waits for the fresh one) and a clean stop."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import child_pids
from tests.support.server import ServerProcess

BODY = {"prompt": "a lighthouse", "num_inference_steps": 2, "width": 64, "height": 64, "seed": 7}


def imports_torch(pid: int) -> bool:
    return "torch" in (Path("/proc") / str(pid) / "maps").read_text()


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        {"THAW_MODEL": str(tiny_model), "THAW_WORKER": "process", "THAW_WARM_WAIT_S": "120"}
    ).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_the_pipeline_lives_in_a_child_and_the_server_never_imports_torch(
    server: ServerProcess,
) -> None:
    assert server.proc is not None
    (worker,) = child_pids(server.proc.pid)
    assert imports_torch(worker)
    assert not imports_torch(server.proc.pid)
    health = server.get("/health").json()
    assert health["status"] == "ready"
    assert health["device"] == "cpu"
    names = [phase["name"] for phase in health["phases"]]
    assert names[0] == "worker_start"
    assert {"import", "build", "to_device"} <= set(names)
    # `python -m handler` started the worker before importing uvicorn and the app, and the
    # load took that worker: it began before the load attempt did.
    started = health["phases"][0]
    assert started["detail"] == {"pid": worker, "started_early": True}
    assert started["start_s"] < 0


def test_generation_goes_through_the_worker_and_is_deterministic(server: ServerProcess) -> None:
    first = server.post("/generate", json=BODY)
    second = server.post("/generate", json=BODY)
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/png"
    assert first.headers["x-seed"] == "7"
    assert first.content == second.content


def test_a_request_after_a_worker_death_waits_for_the_fresh_worker(
    server: ServerProcess,
) -> None:
    assert server.proc is not None
    (worker,) = child_pids(server.proc.pid)
    os.kill(worker, signal.SIGKILL)
    time.sleep(0.2)
    # The server noticed the death and is loading a fresh worker: this request had not begun
    # on the dead one, so it waits for the new one instead of failing.
    again = server.post("/generate", json=BODY)
    assert again.status_code == 200
    (replacement,) = child_pids(server.proc.pid)
    assert replacement != worker
    health = server.get("/health").json()
    assert health["status"] == "ready"
    assert health["loads_completed"] == 2
    assert health["models_lost"] == 1


def test_stopping_the_server_stops_the_worker(tiny_model: Path) -> None:
    process = ServerProcess({"THAW_MODEL": str(tiny_model), "THAW_WORKER": "process"}).start()
    try:
        process.wait_ready()
        assert process.proc is not None
        (worker,) = child_pids(process.proc.pid)
    finally:
        code = process.stop()
    assert code == 0
    assert not Path(f"/proc/{worker}").exists()
