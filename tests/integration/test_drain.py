"""Stopping and idling a real `python -m handler` (uvicorn) process.

SIGTERM while one generation runs and two wait: all three finish, what comes after is refused
with 503 while the listener stays open, readiness fails at once, and the process exits 0. The
deadline cuts what is left off with 503s and logged ids. Idle unload gives the model back and a
request loads it again; the drain delay keeps serving for a moment after the signal.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.lifecycle.drain import EXIT_CUT_OFF
from tests.support.server import ServerProcess

# The tiny model on one CPU thread: a few seconds for SLOW, under one for MEDIUM and SMALL.
SLOW: dict[str, Any] = {"num_inference_steps": 50, "width": 256, "height": 256}
MEDIUM: dict[str, Any] = {"num_inference_steps": 20, "width": 128, "height": 128}
SMALL: dict[str, Any] = {"num_inference_steps": 2, "width": 64, "height": 64}


class Request(threading.Thread):
    """One POST /generate in its own thread and client; `.response` once it is done."""

    def __init__(self, server: ServerProcess, body: dict[str, Any], request_id: str) -> None:
        super().__init__(daemon=True)
        self.url = server.url
        self.body = body
        self.request_id = request_id
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        self.finished_at = 0.0
        self.start()

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=120) as client:
                self.response = client.post(
                    "/generate", json=self.body, headers={"X-Request-Id": self.request_id}
                )
        except Exception as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def result(self, timeout: float = 120) -> httpx.Response:
        self.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.response is not None, f"{self.request_id} got no answer in {timeout}s"
        return self.response


def wait_health(server: ServerProcess, timeout: float = 30, **expected: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = server.get("/health").json()
        if all(health.get(key) == value for key, value in expected.items()):
            return health
        time.sleep(0.02)
    raise AssertionError(f"/health never showed {expected}; last: {health}")


def log_records(server: ServerProcess) -> list[dict[str, Any]]:
    records = []
    for line in server.log.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written as we read
                continue
    return records


def index_of(records: list[dict[str, Any]], message: str) -> int:
    for index, record in enumerate(records):
        if record["msg"] == message:
            return index
    raise AssertionError(f"no log record {message!r}")


def wait_log(server: ServerProcess, message: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        records = [record for record in log_records(server) if record["msg"] == message]
        if records:
            return records[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no log record {message!r} within {timeout}s")
        time.sleep(0.05)


def start(env: dict[str, str]) -> ServerProcess:
    # One torch thread: with two on a 2-core machine that other processes share, OpenMP's
    # spinning threads made a generation ~17x slower here (measured: 85 s against 5 s).
    server = ServerProcess({"THAW_TORCH_THREADS": "1", **env}).start()
    server.wait_ready(timeout=120)
    return server


def test_sigterm_finishes_the_running_and_queued_requests_and_exits_0(tiny_model: Path) -> None:
    # A deadline no busy test machine reaches: this drain must end because the work is done.
    env = {
        "THAW_MODEL": str(tiny_model),
        "THAW_MAX_CONCURRENCY": "1",
        "THAW_DRAIN_TIMEOUT_S": "600",
    }
    server = start(env)
    try:
        # The running one is slow, so that it surely runs when the signal comes.
        requests = [
            Request(server, {**(SLOW if i == 0 else MEDIUM), "prompt": f"fox {i}"}, f"drain-{i}")
            for i in range(3)
        ]
        wait_health(server, inflight=1, queued=2)
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()

        readyz = server.get("/readyz")
        assert readyz.status_code == 503
        assert readyz.json() == {"ready": False, "status": "draining"}
        assert server.get("/livez").status_code == 200
        assert server.get("/health").json()["status"] == "draining"
        refused = server.post("/generate", json={**SMALL, "prompt": "too late"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"
        assert int(refused.headers["retry-after"]) >= 1
        # Still draining: the first generation had not finished when these were answered.
        assert all(request.is_alive() for request in requests[1:])

        for request in requests:
            response = request.result()
            assert response.status_code == 200, response.text
            assert response.content.startswith(b"\x89PNG")
        assert server.wait_exit(timeout=60) == 0
        assert min(request.finished_at for request in requests) > signalled
        with pytest.raises(httpx.TransportError):
            server.get("/livez", timeout=2)
    finally:
        server.stop()

    records = log_records(server)
    finished = records[index_of(records, "drain finished")]
    assert finished["clean"] is True
    assert finished["cut_off"] == []
    # Accepted work first, then the listener closes, then the model is released.
    assert index_of(records, "drain finished") < index_of(records, "Shutting down")
    assert index_of(records, "Shutting down") < index_of(records, "model released")


def test_the_drain_deadline_cuts_off_and_logs_the_request_ids(tiny_model: Path) -> None:
    server = start(
        {"THAW_MODEL": str(tiny_model), "THAW_MAX_CONCURRENCY": "1", "THAW_DRAIN_TIMEOUT_S": "2"}
    )
    try:
        # ~25 s of work each: far past the 2 s deadline.
        body = {"num_inference_steps": 100, "width": 512, "height": 512, "prompt": "a slow one"}
        running = Request(server, body, "cut-running")
        wait_health(server, inflight=1)
        queued = Request(server, body, "cut-queued")
        wait_health(server, inflight=1, queued=1)
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()

        for request in (running, queued):
            response = request.result(timeout=30)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "draining"
            assert "retry-after" in response.headers
            assert request.finished_at - signalled < 10
        code = server.wait_exit(timeout=30)
        exited_after = time.monotonic() - signalled
    finally:
        server.stop()

    assert code == EXIT_CUT_OFF
    # At the deadline: not when the 25 s generation would end, nor after a polite 10 s wait for a
    # worker too busy to read "stop" (it is killed).
    assert 1.5 < exited_after < 8
    records = log_records(server)
    deadline = records[index_of(records, "drain deadline reached")]
    assert deadline["level"] == "warning"
    assert sorted(deadline["cut_off"]) == ["cut-queued", "cut-running"]
    assert records[index_of(records, "drain finished")]["clean"] is False


IDLE_S = 1.5


@pytest.fixture(scope="module")
def idle_server(tiny_model: Path) -> Iterator[ServerProcess]:
    server = start(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_IDLE_UNLOAD_S": str(IDLE_S),
            "THAW_DRAIN_DELAY_S": "1.5",
            "THAW_WARM_WAIT_S": "120",  # the reload after the idle unload is a full cold load
        }
    )
    yield server
    server.stop()


def test_idle_unload_releases_the_model_and_a_request_loads_it_again(
    idle_server: ServerProcess,
) -> None:
    server = idle_server
    assert server.post("/generate", json={**SMALL, "prompt": "warm"}).status_code == 200
    last_request_ended = time.monotonic()
    health = wait_health(server, timeout=IDLE_S + 10, status="cold")
    went_cold_after = time.monotonic() - last_request_ended
    # The server's idle clock starts when the place is freed, just before the response leaves.
    assert went_cold_after >= IDLE_S - 0.2
    assert health["loads_completed"] == 1
    assert health["inflight"] == 0
    # Idle, not broken: readiness holds, so the request that reloads the model can arrive.
    readyz = server.get("/readyz")
    assert readyz.status_code == 200
    assert readyz.json() == {"ready": True, "status": "cold"}
    unloaded = wait_log(server, "model unloaded after idling")  # logged once the memory is back
    assert unloaded["idle_s"] >= IDLE_S

    again = server.post("/generate", json={**SMALL, "prompt": "reload", "seed": 3})
    assert again.status_code == 200, again.text
    assert again.content.startswith(b"\x89PNG")
    health = server.get("/health").json()
    assert health["status"] == "ready"
    assert health["loads_completed"] == 2


def test_the_drain_delay_keeps_accepting_then_refuses(idle_server: ServerProcess) -> None:
    server = idle_server
    # Longer than SLOW: it must outlive the 1.8 s below on a quiet machine too (50 steps at
    # 256 px took less in a clean-clone CI run).
    longer = {**SLOW, "width": 384, "height": 384}
    slow = Request(server, {**longer, "prompt": "keeps the drain busy"}, "delay-slow")
    wait_health(server, inflight=1)
    server.signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert server.get("/readyz").status_code == 503
    during = Request(server, {**SMALL, "prompt": "in the delay"}, "delay-during")
    wait_health(server, queued=1)  # accepted, behind the slow one
    assert time.monotonic() - signalled < 1.5, "too slow to test inside the delay"
    time.sleep(max(0.0, signalled + 1.8 - time.monotonic()))
    assert slow.is_alive(), "the slow request ended before the delay did"
    wait_log(server, "drain: refusing new requests")
    after = server.post("/generate", json={**SMALL, "prompt": "after the delay"})
    assert after.status_code == 503
    assert after.json()["error"]["code"] == "draining"
    assert slow.result().status_code == 200
    assert during.result().status_code == 200
    assert server.wait_exit(timeout=30) == 0
