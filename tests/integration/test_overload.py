"""Overload on loopback: a bounded burst against the tiny model.

400 requests at concurrency 64: the process stays up, memory stays bounded, every answer is 200,
429 or 503 with Retry-After, every accepted request completes, and /livez keeps answering.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.support.server import ServerProcess

TOTAL, CONCURRENCY = 400, 64


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def burst(url: str) -> tuple[Counter[int], list[httpx.Response], list[float]]:
    body = {"prompt": "burst", "num_inference_steps": 1, "width": 64, "height": 64}
    statuses: Counter[int] = Counter()
    refused: list[httpx.Response] = []
    livez: list[float] = []
    pending = iter(range(TOTAL))
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=CONCURRENCY + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for _ in pending:
                response = await client.post("/generate", json=body)
                statuses[response.status_code] += 1
                if response.status_code != 200:
                    refused.append(response)

        async def prober() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as probe:
                while not done.is_set():
                    started = time.perf_counter()
                    response = await probe.get("/livez")
                    assert response.status_code == 200
                    livez.append(time.perf_counter() - started)
                    await asyncio.sleep(0.05)

        probing = asyncio.ensure_future(prober())
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        done.set()
        await probing
    return statuses, refused, livez


def test_a_burst_is_answered_honestly_and_the_process_stays_healthy(tiny_model: Path) -> None:
    server = ServerProcess({"THAW_MODEL": str(tiny_model), "THAW_QUEUE_SIZE": "8"}).start()
    try:
        server.wait_ready()
        server.post("/generate", json={"prompt": "warm", "num_inference_steps": 1})
        assert server.proc is not None
        before = rss_mib(server.proc.pid)
        started = time.monotonic()
        statuses, refused, livez = asyncio.run(burst(server.url))
        elapsed = time.monotonic() - started
        after = rss_mib(server.proc.pid)
        health = server.get("/health").json()
        print(
            f"\noverload: {TOTAL} requests at concurrency {CONCURRENCY} in {elapsed:.1f}s: "
            f"{dict(sorted(statuses.items()))}; RSS {before:.0f} -> {after:.0f} MiB; "
            f"/livez {len(livez)} probes, max {max(livez) * 1000:.0f} ms; served {health['served']}"
        )
        assert sum(statuses.values()) == TOTAL
        assert set(statuses) <= {200, 429, 503}
        assert statuses[200] >= 1
        for response in refused:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] in {"overloaded", "queue_timeout"}
        assert health["served"] >= statuses[200]  # every accepted request completed
        assert (health["inflight"], health["queued"]) == (0, 0)
        assert after < before + 300  # bounded: no per-request growth
        assert server.get("/livez").status_code == 200
    finally:
        assert server.stop() == 0
