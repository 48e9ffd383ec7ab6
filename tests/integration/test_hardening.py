"""Security, faults and observability over real HTTP, on one shared server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import child_pids
from tests.support.server import ServerProcess

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUICK = {"num_inference_steps": 1, "width": 64, "height": 64}
SLOW = {**QUICK, "prompt": "__slow__"}  # held 4 s in the worker thread


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_API_KEY": KEY,
            "THAW_LOADER": "tests.support.faulty_loader:load",
            "THAW_REQUEST_TIMEOUT_S": "2.5",
            "THAW_QUEUE_SIZE": "4",
        }
    ).start()
    proc.wait_ready()
    yield proc
    assert proc.stop() == 0


def wait_idle(server: ServerProcess, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = server.get("/health").json()
        if health["inflight"] == 0 and health["queued"] == 0:
            return dict(health)
        time.sleep(0.05)
    raise AssertionError(f"still busy: {health}")


def test_generation_requires_the_key_and_probes_do_not(server: ServerProcess) -> None:
    missing = server.post("/generate", json={**QUICK, "prompt": "x"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = server.post("/generate", json={"prompt": "x"}, headers={"x-api-key": "nope"})
    assert wrong.status_code == 401
    assert server.post("/generate", json={**QUICK, "prompt": "x"}, headers=AUTH).status_code == 200
    by_header = server.post("/generate", json={**QUICK, "prompt": "x"}, headers={"x-api-key": KEY})
    assert by_header.status_code == 200
    for probe in ("/livez", "/readyz", "/health", "/metrics"):
        assert server.get(probe).status_code == 200


def test_a_simulated_cuda_oom_fails_that_request_only(server: ServerProcess) -> None:
    response = server.post("/generate", json={**QUICK, "prompt": "__oom__"}, headers=AUTH)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "out_of_memory"
    assert "CUDA out of memory" in error["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert server.get("/readyz").status_code == 200
    assert server.post("/generate", json={**QUICK, "prompt": "ok"}, headers=AUTH).status_code == 200
    assert server.get("/health").json()["inference_errors"] >= 1


def test_the_deadline_gives_504_and_the_place_frees_when_the_thread_ends(
    server: ServerProcess,
) -> None:
    response = server.post("/generate", json=SLOW, headers=AUTH)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert server.get("/health").json()["inflight"] == 1  # the thread still runs
    assert wait_idle(server)["inflight"] == 0
    assert server.post("/generate", json={**QUICK, "prompt": "ok"}, headers=AUTH).status_code == 200


def test_a_client_that_disconnects_does_not_leak_a_place(server: ServerProcess) -> None:
    for _ in range(3):
        with pytest.raises(httpx.ReadTimeout):
            server.post("/generate", json=SLOW, headers=AUTH, timeout=0.3)
    health = wait_idle(server)
    assert (health["inflight"], health["queued"]) == (0, 0)
    assert server.post("/generate", json={**QUICK, "prompt": "ok"}, headers=AUTH).status_code == 200


def test_request_ids_are_echoed_only_when_well_formed(server: ServerProcess) -> None:
    given = server.get("/livez", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    hostile = server.get("/livez", headers={"X-Request-Id": "a b;<script>"})
    assert hostile.headers["x-request-id"] != "a b;<script>"
    assert hostile.headers["x-request-id"].isalnum()


def test_metrics_expose_requests_latency_state_and_phases(server: ServerProcess) -> None:
    server.post("/generate", json={**QUICK, "prompt": "m"}, headers=AUTH)
    text = server.get("/metrics").text
    assert 'thaw_requests_total{method="POST",route="/generate",status="200"}' in text
    assert 'thaw_requests_total{method="POST",route="/generate",status="401"}' in text
    assert "thaw_inference_seconds_bucket" in text
    assert "thaw_queue_wait_seconds_count" in text
    assert 'thaw_model_state{state="ready"} 1.0' in text
    assert 'thaw_load_phase_seconds{phase="import"}' in text
    assert "thaw_inflight" in text
    assert "thaw_queued" in text
    assert "thaw_cold_start_seconds" in text


def test_logs_are_json_with_request_ids_and_no_prompts(server: ServerProcess) -> None:
    secret_prompt = "a very private prompt 4242"
    server.post("/generate", json={**QUICK, "prompt": secret_prompt}, headers=AUTH)
    time.sleep(0.2)
    log = server.log
    assert secret_prompt not in log
    import json

    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("msg") == "request"]
    assert requests
    assert all("request_id" in line and "status" in line for line in requests)
    transitions = [line for line in lines if line.get("msg") == "model ready"]
    assert transitions
    assert transitions[0]["seconds"] > 0


def test_a_hanging_loader_times_out_to_failed(tiny_model: Path) -> None:
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": "tests.support.slow_loader:load",
            "THAW_TEST_LOAD_DELAY_S": "120",
            "THAW_LOAD_TIMEOUT_S": "1",
            "THAW_LOAD_ATTEMPTS": "2",
            "THAW_LOAD_BACKOFF_S": "0.1",
        }
    ).start()
    try:
        server.wait_live()
        deadline = time.monotonic() + 30
        health = server.get("/health").json()
        while health["status"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.1)
            health = server.get("/health").json()
        assert health["status"] == "failed"
        assert "did not finish within 1s" in health["last_error"]
        # The hung load's worker process is stopped, not left holding memory.
        assert server.proc is not None
        while child_pids(server.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert child_pids(server.proc.pid) == []
        response = server.post("/generate", json={"prompt": "x"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "load_failed"
        # Each timed-out attempt counts as one failed attempt, as any other failure does.
        assert health["load_attempts"] == 2
    finally:
        server.stop()
