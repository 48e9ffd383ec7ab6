"""Generations in the worker process: THAW_MAX_CONCURRENCY=2 really runs two at once, each giving
the image it gives alone (a shared scheduler would mix their denoising loops); a client that
disconnects cancels its generation at the next step."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.procs import child_pids
from tests.support.server import ServerProcess


def body(steps: int, seed: int) -> dict[str, object]:
    return {
        "prompt": "a lighthouse",
        "num_inference_steps": steps,
        "width": 64,
        "height": 64,
        "seed": seed,
    }


def test_concurrent_generations_give_the_images_they_give_alone(tiny_model: Path) -> None:
    server = ServerProcess({"THAW_MODEL": str(tiny_model), "THAW_MAX_CONCURRENCY": "2"}).start()
    try:
        server.wait_ready()
        requests = [body(12, 1), body(17, 2), body(12, 3), body(17, 4)]
        alone = [server.post("/generate", json=request).content for request in requests]
        together: list[bytes] = [b""] * len(requests)
        peak = 0

        def send(index: int) -> None:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                answer = client.post("/generate", json=requests[index])
                assert answer.status_code == 200
                together[index] = answer.content

        def watch() -> None:
            nonlocal peak
            while any(thread.is_alive() for thread in senders):
                peak = max(peak, server.get("/health").json()["inflight"])

        senders = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for thread in senders:
            thread.start()
        watcher = threading.Thread(target=watch)
        watcher.start()
        for thread in senders:
            thread.join(180)
        watcher.join(10)
        assert peak == 2
        assert together == alone
    finally:
        server.stop()


def test_a_client_that_disconnects_cancels_its_generation_at_the_next_step(
    tiny_model: Path,
) -> None:
    """An abandoned request must not hold the model: the worker stops at its next denoising
    step, the place frees at once, and the same worker serves the next request."""
    server = ServerProcess({"THAW_MODEL": str(tiny_model)}).start()
    try:
        server.wait_ready()
        (worker,) = child_pids(server.proc.pid) if server.proc else [0]
        long = {"prompt": "a long one", "num_inference_steps": 100, "width": 512, "height": 512}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/generate", json=long, timeout=2.0)  # gives up after 2 s
        freed = time.monotonic()
        while server.get("/health").json()["inflight"] and time.monotonic() < freed + 15:
            time.sleep(0.05)
        health = server.get("/health").json()
        assert health["inflight"] == 0, "the abandoned generation still holds its place"
        assert health["inference_errors"] == 0
        assert server.post("/generate", json=body(2, 1)).status_code == 200
        assert child_pids(server.proc.pid) == [worker]  # canceled, not killed
        assert "generation canceled" in server.log, server.log[-3000:]
    finally:
        server.stop()
