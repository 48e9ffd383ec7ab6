"""Overload on loopback: a bounded burst against the tiny model.

400 requests at concurrency 64: the process stays up, the memory of the whole process tree
(server and model worker) stays bounded, every answer is 200, 429 or 503 with Retry-After, the
server served exactly the 200s it gave, /livez answers every probe, and no worker is left after
the server stops.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.support.procs import child_pids, running
from tests.support.server import ServerProcess

TOTAL, CONCURRENCY = 400, 64


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def tree_rss_mib(pid: int) -> float:
    """The server's resident memory plus its model worker's."""
    return rss_mib(pid) + sum(rss_mib(child) for child in child_pids(pid) if running(child))


async def burst(url: str) -> tuple[Counter[int], list[httpx.Response], list[int]]:
    body = {"prompt": "burst", "num_inference_steps": 1, "width": 64, "height": 64}
    statuses: Counter[int] = Counter()
    refused: list[httpx.Response] = []
    livez: list[int] = []  # every probe's status, none skipped
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
                    try:
                        livez.append((await probe.get("/livez")).status_code)
                    except httpx.HTTPError:  # a timeout or a refused connection counts
                        livez.append(0)
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
        (worker,) = child_pids(server.proc.pid)
        before = tree_rss_mib(server.proc.pid)
        started = time.monotonic()
        statuses, refused, livez = asyncio.run(burst(server.url))
        elapsed = time.monotonic() - started
        after = tree_rss_mib(server.proc.pid)
        health = server.get("/health").json()
        print(
            f"\noverload: {TOTAL} requests at concurrency {CONCURRENCY} in {elapsed:.1f}s: "
            f"{dict(sorted(statuses.items()))}; RSS {before:.0f} -> {after:.0f} MiB; "
            f"/livez {len(livez)} probes, {Counter(livez)}; served {health['served']}"
        )
        assert sum(statuses.values()) == TOTAL
        assert set(statuses) <= {200, 429, 503}
        assert statuses[200] >= 1
        for response in refused:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] in {"overloaded", "queue_timeout"}
        assert health["served"] == statuses[200] + 1  # every 200 and the warm-up, no more
        assert set(livez) == {200}
        assert (health["inflight"], health["queued"]) == (0, 0)
        assert after < before + 300  # bounded: no per-request growth
        assert server.get("/livez").status_code == 200
    finally:
        assert server.stop() == 0
    assert not running(worker)
