"""THAW_MAX_CONCURRENCY=2 with the default worker process: two generations really run at once
in the worker, and each gives the image it gives alone (a shared scheduler would mix their
denoising loops)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

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
