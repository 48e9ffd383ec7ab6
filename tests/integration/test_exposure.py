"""What a caller without the key, and the logs, get to see.

The server is plain `uvicorn handler.app:app`, as a user would start it: uvicorn's access log is
on by default there (`python -m handler` turns it off), so it is where a query string would leak.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess

KEY = "exposure-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Fields a probe or a dashboard without the key may read; everything else is behind the key.
PUBLIC = {
    "status",
    "load_attempts",
    "loads_completed",
    "load_seconds",
    "retry_in_s",
    "inflight",
    "queued",
    "served",
    "inference_errors",
    "uptime_s",
    "cold_start",
    "phases",
    "load_started_s",
}


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        {"THAW_MODEL": str(tiny_model), "THAW_API_KEY": KEY},
        module="uvicorn",
        args=["handler.app:app"],
    ).start()
    proc.wait_ready()
    yield proc
    # Plain uvicorn shuts down cleanly, then re-raises the signal it caught.
    assert proc.stop() in (0, -signal.SIGTERM)


def wait_for_log(server: ServerProcess, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log:\n{server.log[-3000:]}")


def test_health_without_the_key_shows_the_state_not_the_detail(
    server: ServerProcess, tiny_model: Path
) -> None:
    for headers in ({}, {"x-api-key": "wrong"}):
        answer = server.get("/health", headers=headers)
        assert answer.status_code == 200  # a probe never needs the key
        public: dict[str, Any] = answer.json()
        assert public["status"] == "ready"
        assert set(public) <= PUBLIC
        assert str(tiny_model) not in answer.text
        assert all("detail" not in phase for phase in public["phases"])
        assert [phase["name"] for phase in public["phases"]]  # the timings stay open
    full = server.get("/health", headers=AUTH).json()
    assert full["model"] == str(tiny_model)
    assert {"last_error", "device", "dtype"} <= set(full)
    assert any("detail" in phase for phase in full["phases"])
    assert server.get("/readyz").status_code == 200
    assert server.get("/livez").status_code == 200


def test_a_load_error_is_shown_only_with_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "private-bucket-name" / "model"
    proc = ServerProcess({"THAW_MODEL": str(missing), "THAW_API_KEY": KEY}).start()
    try:
        proc.wait_live()
        deadline = time.monotonic() + 60
        full = proc.get("/health", headers=AUTH).json()
        while full["last_error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
            full = proc.get("/health", headers=AUTH).json()
        assert "private-bucket-name" in full["last_error"]
        public = proc.get("/health")
        assert public.json()["status"] in ("warming_up", "failed")
        assert "private-bucket-name" not in public.text
    finally:
        proc.stop()


def test_no_query_string_reaches_the_log(server: ServerProcess) -> None:
    secrets = [f"secret-prompt-{n}-{time.monotonic_ns()}" for n in range(4)]
    ok = server.get(
        "/generate", params={"prompt": secrets[0], "num_inference_steps": 1}, headers=AUTH
    )
    assert ok.status_code == 200
    assert server.get("/generate", params={"prompt": secrets[1]}).status_code == 401
    invalid = server.get("/generate", params={"prompt": secrets[2], "width": 7}, headers=AUTH)
    assert invalid.status_code == 422
    assert server.get("/no-such-path", params={"q": secrets[3]}).status_code == 404
    # The access log is still there, with the path and status but not the query.
    log = wait_for_log(server, '"GET /no-such-path')
    assert '"GET /no-such-path HTTP/1.1" 404' in log
    assert '"GET /generate HTTP/1.1" 200' in log
    for secret in secrets:
        assert secret not in log
