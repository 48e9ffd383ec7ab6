"""Admission over real HTTP: the warm-up budget (503) and a full queue (429)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support.server import ServerProcess


def test_a_request_past_the_warm_wait_gets_503_with_retry_after(tiny_model: Path) -> None:
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": "tests.support.slow_loader:load",
            "THAW_TEST_LOAD_DELAY_S": "60",
            "THAW_WARM_WAIT_S": "0.5",
        }
    ).start()
    try:
        server.wait_live()
        response = server.post("/generate", json={"prompt": "x", "num_inference_steps": 2})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "warming_up"
        assert int(response.headers["retry-after"]) >= 1
        assert server.get("/readyz").status_code == 503
        assert server.get("/livez").status_code == 200
        health = server.get("/health").json()
        assert health["status"] == "warming_up"
        assert health["queued"] == 0
        assert health["inflight"] == 0
    finally:
        server.stop()


def test_a_full_queue_gets_429_and_accepted_requests_complete(tiny_model: Path) -> None:
    server = ServerProcess(
        {"THAW_MODEL": str(tiny_model), "THAW_MAX_CONCURRENCY": "1", "THAW_QUEUE_SIZE": "1"}
    ).start()
    try:
        server.wait_ready()
        body = {"prompt": "busy", "num_inference_steps": 30, "width": 128, "height": 128}

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                return await asyncio.gather(
                    *(client.post("/generate", json=body) for _ in range(6))
                )

        responses = asyncio.run(burst())
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(429) >= 1
        assert statuses.count(200) >= 2
        for response in responses:
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "overloaded"
                assert int(response.headers["retry-after"]) >= 1
        health = server.get("/health").json()
        assert (health["inflight"], health["queued"]) == (0, 0)
    finally:
        server.stop()
