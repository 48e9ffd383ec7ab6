"""Preload policies and the single flight over real HTTP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.support.server import ServerProcess


def test_thirty_two_concurrent_first_requests_give_exactly_one_load(tiny_model: Path) -> None:
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_PRELOAD": "lazy",
            "THAW_QUEUE_SIZE": "32",
            "THAW_WARM_WAIT_S": "120",  # the first requests wait through a whole cold load
        }
    ).start()
    try:
        server.wait_live()
        assert server.get("/health").json()["status"] == "cold"
        body = {"prompt": "crowd", "num_inference_steps": 1, "width": 64, "height": 64}

        async def first_requests() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                return await asyncio.gather(
                    *(client.post("/generate", json=body) for _ in range(32))
                )

        responses = asyncio.run(first_requests())
        assert [r.status_code for r in responses] == [200] * 32
        health = server.get("/health").json()
        assert health["load_attempts"] == 1
        assert health["loads_completed"] == 1
        assert server.log.count('"model load started"') == 1
    finally:
        assert server.stop() == 0


def test_eager_preload_listens_only_once_ready(tiny_model: Path) -> None:
    server = ServerProcess({"THAW_MODEL": str(tiny_model), "THAW_PRELOAD": "eager"}).start()
    try:
        server.wait_live(timeout=120)
        assert server.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_a_model_that_cannot_load_fails_honestly(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    server = ServerProcess(
        {
            "THAW_MODEL": str(missing),
            "THAW_LOAD_ATTEMPTS": "2",
            "THAW_LOAD_BACKOFF_S": "0.1",
            "THAW_LOAD_COOLDOWN_S": "600",
        }
    ).start()
    try:
        server.wait_live()
        health = server.get("/health").json()
        for _ in range(600):  # the imports come first: allow up to 60 s
            health = server.get("/health").json()
            if health["status"] == "failed":
                break
            time.sleep(0.1)
        assert health["status"] == "failed"
        assert health["load_attempts"] == 2
        assert str(missing) in health["last_error"]
        response = server.post("/generate", json={"prompt": "x"})
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "load_failed"
        assert str(missing) in error["message"]
        assert int(response.headers["retry-after"]) > 500
        assert server.get("/livez").status_code == 200
        assert server.get("/readyz").json() == {"ready": False, "status": "failed"}
    finally:
        server.stop()
